"""dataflow-edit score and filter on a real run's output, and the same steps through the Python operators."""

import os
import sys

import numpy as np
import pytest
from PIL import Image

from dataflow.cli.main import main
from dataflow.operators.core_vision import ImageEditEvaluator, ImageEditFilter
from dataflow.utils.manifest import run_folders
from dataflow.utils.storage import FileStorage
from tests.conftest import edit_row, read_jsonl, write_image, write_jsonl


def make_run(tmp_path, monkeypatch, capsys):
    """A classic run over a colour picture and an already gray one (whose 'grayscale' edit changes nothing)."""
    data = tmp_path / "data"
    data.mkdir()
    write_image(data / "color.png", 48, 32, seed=1)
    gray = np.random.default_rng(2).integers(0, 256, (32, 48), dtype=np.uint8)
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(data / "gray.png")
    rows = [edit_row("color.png", "Convert to grayscale.", id="color"),
            edit_row("gray.png", "Convert to grayscale.", id="gray")]
    jsonl = write_jsonl(data / "in.jsonl", rows)
    monkeypatch.chdir(tmp_path)
    assert main(["run", jsonl, "--backend", "classic", "--out", "out", "--no-gallery"]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_score_then_filter_rejects_an_unchanged_copy_and_keeps_a_real_edit(tmp_path, monkeypatch, capsys):
    output = make_run(tmp_path, monkeypatch, capsys)
    assert main(["score", output, "--metrics", "change"]) == 0
    scored = capsys.readouterr().out.strip().splitlines()[-1]
    assert scored == os.path.join("out", "scored_step1.jsonl")
    rows = {r["id"]: r for r in read_jsonl(scored)}
    assert rows["gray"]["scores"][0]["change"]["no_change"] is True
    assert rows["gray"]["scores"][0]["change"]["changed_fraction"] == 0.0
    assert rows["color"]["scores"][0]["change"]["no_change"] is False
    assert rows["color"]["scores"][0]["change"]["changed_fraction"] > 0.5

    assert main(["filter", scored, "--drop-no-change", "--min", "changed_fraction=0.01"]) == 0
    printed = capsys.readouterr()
    kept_file = printed.out.strip().splitlines()[-1]
    assert kept_file == os.path.join("out", "filtered_step1.jsonl")
    assert "rejected 1 in 1 rows" in printed.err
    kept, rejected = read_jsonl(kept_file), read_jsonl(os.path.join("out", "filtered_step1_rejected.jsonl"))
    assert [r["id"] for r in kept] == ["color"] and [r["id"] for r in rejected] == ["gray"]
    assert "no_change" in rejected[0]["rejected_because"]
    assert run_folders(kept_file).input_dir == str(tmp_path / "data")  # the gallery can be rebuilt for it
    assert main(["gallery", kept_file]) == 0
    page = open(capsys.readouterr().out.strip().splitlines()[-1], encoding="utf-8").read()
    assert "changed_fraction 0.995 · ssim 1 · no_change False" in page and "<img" in page

    # A rerun of the scoring scores nothing again and writes the same file.
    before = open(scored, encoding="utf-8").read()
    assert main(["score", output, "--metrics", "change"]) == 0
    assert "0 scored, 2 done earlier" in capsys.readouterr().err
    assert open(scored, encoding="utf-8").read() == before


def test_the_python_operators_write_what_the_cli_writes(tmp_path, monkeypatch, capsys):
    output = make_run(tmp_path, monkeypatch, capsys)
    assert main(["score", output, "--metrics", "change", "--out", "cli"]) == 0
    assert main(["filter", os.path.join("cli", "scored_step1.jsonl"), "--drop-no-change", "--out", "cli"]) == 0
    folders = run_folders(output)
    storage = FileStorage(output, cache_path="py", file_name_prefix="scored")
    ImageEditEvaluator(["change"], source_dir=folders.input_dir, edited_dir=folders.run_dir).run(storage.step())
    storage = FileStorage(os.path.join("py", "scored_step1.jsonl"), cache_path="py", file_name_prefix="filtered")
    ImageEditFilter(drop_no_change=True).run(storage.step())
    for name in ("scored_step1.jsonl", "filtered_step1.jsonl", "filtered_step1_rejected.jsonl"):
        assert read_jsonl(os.path.join("cli", name)) == read_jsonl(os.path.join("py", name)), name


def test_bad_score_and_filter_options_are_one_line_errors(tmp_path, monkeypatch, capsys):
    output = make_run(tmp_path, monkeypatch, capsys)
    assert main(["score", output, "--metrics", "change,sharpness"]) == 2
    assert "--metrics takes names from change, clip, dino, judge" in capsys.readouterr().err
    assert main(["filter", output, "--min", "clip_t"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert main(["filter", output, "--min", "clip_t=0.2"]) == 2
    assert "score the edits first" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory) -> str:
    pytest.importorskip("transformers")
    from tests.operators.eval.tiny_models import build_tiny_clip

    return build_tiny_clip(str(tmp_path_factory.mktemp("metric-models") / "tiny-clip"))


def test_score_with_clip_and_an_api_judge_from_the_command_line(tmp_path, monkeypatch, capsys, tiny_clip_dir):
    from tests.operators.eval.chat_server import MODEL, ChatServer

    output = make_run(tmp_path, monkeypatch, capsys)
    server = ChatServer(key="judge-key").start()
    try:
        monkeypatch.setenv("DF_API_KEY", "judge-key")
        code = main(["score", output, "--metrics", "change,clip,judge", "--clip-model", tiny_clip_dir,
                     "--judge-api-url", server.url, "--judge-model", MODEL])
    finally:
        server.stop()
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "judge requests: 2" in printed.err and "judge-key" not in printed.err
    for row in read_jsonl(printed.out.strip().splitlines()[-1]):
        (entry,) = row["scores"]
        assert set(entry) == {"change", "clip", "judge"}
        assert entry["judge"]["sc"] == 7 and entry["judge"]["pq"] == 8
        assert abs(entry["judge"]["overall"] - 56 ** 0.5) < 1e-6
        assert -1 <= entry["clip"]["clip_t"] <= 1
    assert not server.violations
    assert main(["score", output, "--metrics", "judge", "--judge-api-url", server.url]) == 2
    assert "--judge-api-url needs --judge-model" in capsys.readouterr().err


def test_a_scored_and_filtered_run_exports_to_a_dataset_that_loads(tmp_path, monkeypatch, capsys):
    datasets = pytest.importorskip("datasets")
    output = make_run(tmp_path, monkeypatch, capsys)
    assert main(["score", output, "--metrics", "change"]) == 0
    assert main(["filter", os.path.join("out", "scored_step1.jsonl"), "--drop-no-change"]) == 0
    kept = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["export", kept, "--format", "hf", "--out", "dataset"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("dataset")
    loaded = datasets.load_dataset("parquet", data_dir="dataset", split="train")
    (example,) = list(loaded)  # the gray row was rejected
    assert example["id"] == "color" and example["no_change"] is False
    (row,) = read_jsonl(kept)
    assert np.array_equal(np.asarray(example["edited_image"].convert("RGB")),
                          np.asarray(Image.open(row["output_image"][0]).convert("RGB")))


@pytest.mark.parametrize("metrics", ["clip", "change,dino", "judge"])
def test_a_metric_without_its_packages_is_one_line_naming_the_extra_before_any_work(tmp_path, monkeypatch, capsys,
                                                                                   metrics):
    """Without torch, 'score --metrics clip' used to fail in the middle of the run ('the run failed
    (ModuleNotFoundError ...); finished rows are checkpointed') with exit 1."""
    output = make_run(tmp_path, monkeypatch, capsys)
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails, as where it is not installed
    assert main(["score", output, "--metrics", metrics]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "pip install 'dataflow-edit[diffusers,eval]'" in error
    assert "checkpointed" not in error and "torch" in error
    assert not [name for name in os.listdir("out") if name.startswith("scored_step1")]
