"""dataflow-edit instruct, run as a user runs it: from a folder of photos to rows that run edits, offline."""

import os
import subprocess
import sys
from collections import Counter

import pytest

from tests.conftest import read_jsonl, write_image, write_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(*args, cwd, **env):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO, **env)
    return subprocess.run([sys.executable, "-m", "dataflow.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    (folder / "trip").mkdir(parents=True)
    (folder / ".thumbs").mkdir()
    for i in range(5):
        write_image(folder / f"p{i}.png", 40 + 4 * i, 30, seed=i)
    write_image(folder / "trip" / "beach.JPG", 36, 48, seed=9)
    write_image(folder / ".thumbs" / "hidden.png", 8, 8)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_templates_then_classic_run_edits_every_row_and_the_counts_match_the_quotas(tmp_path, photos):
    done = cli("instruct", "photos", "--backend", "templates", "--per-image", "2", "--quota", "style=4",
               "--out", "work", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == os.path.join("work", "instructions.jsonl")
    rows = read_jsonl(tmp_path / "work" / "instructions.jsonl")
    assert len(rows) == 12 and len({r["id"] for r in rows}) == 12
    assert Counter(r["edit_type"] for r in rows) == {"style": 4, "position_viewpoint": 3, "lighting": 3,
                                                     "global_tone": 2}
    assert Counter(r["images"] for r in rows) == {f"../photos/p{i}.png": 2 for i in range(5)} | {
        "../photos/trip/beach.JPG": 2}
    assert "style 4/4" in done.stderr and "Traceback" not in done.stderr

    edited = cli("run", "work/instructions.jsonl", "--backend", "classic", "--out", "work/edited", "--no-gallery",
                 cwd=tmp_path)
    assert edited.returncode == 0, edited.stderr
    outputs = read_jsonl(tmp_path / edited.stdout.strip().splitlines()[-1])
    assert len(outputs) == 12 and all(len(r["output_image"]) == 1 for r in outputs)
    assert all(os.path.isfile(tmp_path / r["output_image"][0]) for r in outputs)
    assert [r["id"] for r in outputs] == [r["id"] for r in rows]


def test_the_documented_loop_runs_from_photos_to_an_exported_dataset(tmp_path, photos):
    """docs/instructions.md's loop: instruct -> run -> score -> filter -> export, offline."""
    pytest.importorskip("pyarrow")
    steps = [
        ("instruct", "photos/", "--backend", "templates", "--per-image", "2", "--out", "work"),
        ("run", "work/instructions.jsonl", "--backend", "classic", "--out", "work/edited"),
        ("score", "work/edited/edited_step1.jsonl", "--metrics", "change"),
        ("filter", "work/edited/scored_step1.jsonl", "--drop-no-change", "--min", "changed_fraction=0.01"),
        ("export", "work/edited/filtered_step1.jsonl", "--format", "hf", "--out", "dataset",
         "--rejected", "work/edited/filtered_step1_rejected.jsonl"),
    ]
    for step in steps:
        result = cli(*step, cwd=tmp_path)
        assert result.returncode == 0, (step[0], result.stderr)
    import pyarrow.parquet as pq

    exported = pq.read_table(tmp_path / "dataset" / "data").to_pylist()
    assert len(exported) == 12 and {e["instruction"] for e in exported} <= {
        p for t in ("position_viewpoint", "lighting", "style", "global_tone") for p in phrases(t)}
    assert all(e["edited_image"] and e["source_image"] for e in exported)
    assert all(e["instruction"] in phrases(e["edit_type"]) for e in exported)  # each row's edit type, carried
    assert "name: edit_type" in (tmp_path / "dataset" / "README.md").read_text()


def phrases(type_name):
    from dataflow.operators.core_vision.generate.instructions.taxonomy import load_taxonomy

    return load_taxonomy().get(type_name).phrases


def test_a_rerun_skips_what_is_done_and_writes_the_same_file(tmp_path, photos):
    args = ("instruct", "photos", "--per-image", "3", "--out", "work")
    assert cli(*args, cwd=tmp_path).returncode == 0
    first = (tmp_path / "work" / "instructions.jsonl").read_text()
    again = cli(*args, cwd=tmp_path)
    assert again.returncode == 0 and "0 asked now, 6 done earlier" in again.stderr
    assert (tmp_path / "work" / "instructions.jsonl").read_text() == first
    other = cli("instruct", "photos", "--per-image", "3", "--seed", "5", "--out", "work", cwd=tmp_path)
    assert other.returncode == 0 and (tmp_path / "work" / "instructions.jsonl").read_text() != first


@pytest.mark.parametrize("args, message", [
    (("--types", "add"), "the templates backend cannot write add instructions (it writes position_viewpoint, "
                         "lighting, style, global_tone); use --backend api or --backend local"),
    (("--types", "sky"), "unknown edit type 'sky'"),
    (("--per-image", "5"), "--per-image 5 asks for more instructions per image than there are edit types"),
    (("--quota", "style=9"), "--quota style=9 asks for more instructions of that type than there are images (6)"),
    (("--quota", "style"), "--quota takes TYPE=N"),
    (("--rewrite",), "the templates backend cannot rewrite instructions"),
    (("--backend", "api", "--model", "m"), "--backend api needs --api-url"),
])
def test_bad_options_are_one_line_errors(tmp_path, photos, args, message):
    result = cli("instruct", "photos", "--out", "work", *args, cwd=tmp_path, DF_BASE_URL="")
    assert result.returncode == 2, result.stderr
    assert f"error: {message}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "work" / "instructions.jsonl")


def test_a_jsonl_input_with_a_missing_image_fails_that_row_only(tmp_path):
    write_image(tmp_path / "a.png", 20, 20)
    write_jsonl(tmp_path / "images.jsonl", [{"id": "a", "images": "a.png"}, {"id": "gone", "images": "gone.png"}])
    result = cli("instruct", "images.jsonl", "--types", "style", "--out", "work", cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # some images failed, the rest written
    assert [r["id"] for r in read_jsonl(tmp_path / "work" / "instructions.jsonl")] == ["a/style/0"]
    (failed,) = read_jsonl(tmp_path / "work" / "instructions_rejected.jsonl")
    assert failed["image_id"] == "gone" and "gone.png" in failed["instruction_error"]


def test_an_empty_folder_is_said_plainly(tmp_path):
    (tmp_path / "empty").mkdir()
    result = cli("instruct", "empty", "--out", "work", cwd=tmp_path)
    assert result.returncode == 2
    assert "empty holds no images" in result.stderr and "Traceback" not in result.stderr


def test_the_api_backend_reads_its_key_from_the_environment_only(tmp_path):
    pytest.importorskip("httpx")
    from tests.operators.generate.instructions.chat_server import MODEL, InstructionServer, solid

    (tmp_path / "photos").mkdir()
    for i in range(3):
        solid("red", 20 + i, 20).save(tmp_path / "photos" / f"{i}.png")
    server = InstructionServer(key="secret-key-4242").start()
    try:
        result = cli("instruct", "photos", "--backend", "api", "--api-url", server.url, "--model", MODEL,
                     "--types", "add,remove", "--per-image", "2", "--out", "work", cwd=tmp_path,
                     DF_API_KEY="secret-key-4242")
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert len(server.requests) == 3 and server.violations == []
    rows = read_jsonl(tmp_path / "work" / "instructions.jsonl")
    assert Counter(r["edit_type"] for r in rows) == {"add": 3, "remove": 3}
    assert all(r["provenance"]["model"] == MODEL for r in rows)
    assert "api: requests: 3, retries: 0" in result.stderr
    assert "secret-key-4242" not in result.stderr + result.stdout
    assert "secret-key-4242" not in (tmp_path / "work" / "instructions.progress.jsonl").read_text()
