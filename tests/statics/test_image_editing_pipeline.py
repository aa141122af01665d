"""The seed script, run from the command line as the documentation shows."""

import os
import subprocess
import sys

import pytest
from PIL import Image

from tests.conftest import edit_row, read_jsonl, write_image, write_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "dataflow", "statics", "pipelines", "gpu_pipelines", "image_editing_pipeline.py")


def run_script(*args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_example_data_the_script_points_at_exists():
    from dataflow.statics.pipelines.gpu_pipelines.image_editing_pipeline import build_parser

    default = build_parser().parse_args([]).first_entry_file_name
    rows = read_jsonl(default)
    assert rows and all(os.path.isfile(os.path.join(os.path.dirname(default), r["images"])) for r in rows)


@pytest.mark.slow
def test_the_script_edits_a_jsonl_from_the_command_line(tmp_path, tiny_model_dir, mixed_images):
    pytest.importorskip("diffusers")
    rows = [edit_row(os.path.basename(p), "Make it red.") for p in mixed_images.values()]
    jsonl = write_jsonl(tmp_path / "in.jsonl", rows)
    work = tmp_path / "work"
    work.mkdir()
    result = run_script("--first_entry_file_name", jsonl, "--hf_model_name_or_path", tiny_model_dir,
                        "--diffuser_num_inference_steps", "2", "--diffuser_image_height", "64",
                        "--diffuser_image_width", "64", "--batch_size", "2", cwd=work)
    assert result.returncode == 0, result.stderr
    output = result.stdout.strip().splitlines()[-1]
    assert output == "./cache_local/image_edit_local/dataflow_cache_step_step1.jsonl"
    out = read_jsonl(work / output)
    for row, (w, h) in zip(out, [(200, 100), (120, 120), (90, 180)]):
        (path,) = row["output_image"]
        out_w, out_h = Image.open(work / path).size
        assert out_w / out_h == pytest.approx(w / h, rel=0.05)


def test_a_bad_flag_value_exits_2_without_a_traceback(tmp_path):
    result = run_script("--first_entry_file_name", str(tmp_path / "missing.jsonl"), "--Image_gen_task", "video",
                        cwd=tmp_path)
    assert result.returncode == 2
    assert "Image_gen_task='video' is not supported" in result.stderr
    assert "Traceback" not in result.stderr


def test_hints_name_the_flags_of_the_script(tmp_path):
    """Hints named flags of the CLI or of no interface at all (--skip_malformed_lines in the CLI)."""
    (tmp_path / "bad.jsonl").write_text('{"images": "a.png", "conversations": "Unterminated', encoding="utf-8")
    result = run_script("--first_entry_file_name", "bad.jsonl", cwd=tmp_path)
    assert result.returncode == 2
    assert "(Unterminated string starting at column" in result.stderr and "at at" not in result.stderr
    assert "--skip_malformed_lines" in result.stderr and "--skip-malformed-lines" not in result.stderr

    write_image(tmp_path / "a.png", 40, 20)
    rows = tmp_path / "in.jsonl"
    rows.write_text('{"images": "a.png", "conversations": "Blur it."}\n', encoding="utf-8")
    result = run_script("--first_entry_file_name", "in.jsonl", "--hf_model_name_or_path", "nobody/no-model",
                        cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: nobody/no-model is not in the Hugging Face cache, and HF_HUB_OFFLINE forbids downloading it. "
        "Download it elsewhere and pass the local folder instead (--hf_model_name_or_path /path/to/no-model)."]


def test_the_script_fuses_the_loras_it_is_given(tmp_path, tiny_model_dir, monkeypatch, capsys):
    pytest.importorskip("peft")
    import numpy as np

    from dataflow.statics.pipelines.gpu_pipelines.image_editing_pipeline import main
    from tests import tiny_kontext
    from tests.tiny_lora import save_tiny_lora

    lora = save_tiny_lora(tiny_kontext, str(tmp_path / "adapter"))
    Image.new("RGB", (48, 32), (200, 80, 40)).save(tmp_path / "a.png")
    jsonl = write_jsonl(tmp_path / "in.jsonl", [edit_row("a.png", "Make it red.")])
    pictures = []
    for name, extra in (("plain", []), ("lora", ["--lora", f"{lora}:0.9"])):
        work = tmp_path / name
        work.mkdir()
        monkeypatch.chdir(work)
        code = main(["--first_entry_file_name", jsonl, "--hf_model_name_or_path", tiny_model_dir,
                     "--diffuser_num_inference_steps", "2", "--diffuser_image_height", "32",
                     "--diffuser_image_width", "32", *extra])
        output = capsys.readouterr().out.strip().splitlines()[-1]
        assert code == 0
        (path,) = read_jsonl(work / output)[0]["output_image"]
        pictures.append(np.asarray(Image.open(work / path), dtype=np.int16))
    assert np.abs(pictures[0] - pictures[1]).max() > 5
