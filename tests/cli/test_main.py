"""The dataflow-edit command line, run as a user runs it."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tests.conftest import edit_row, read_jsonl, write_image, write_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(*args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "dataflow.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def mixed_input(tmp_path):
    write_image(tmp_path / "a.png", 40, 20, seed=1)
    write_image(tmp_path / "b.jpg", 20, 40, seed=2)
    rows = [
        edit_row("a.png", "Convert it to black and white.", id="gray"),
        edit_row("b.jpg", "Rotate the image 90 degrees clockwise.", id="rot"),
        edit_row("a.png", "Change the vase to red.", id="vase"),
        edit_row("missing.png", "Blur it.", id="missing"),
    ]
    return write_jsonl(tmp_path / "in.jsonl", rows)


def test_classic_run_edits_supported_rows_and_explains_the_others(tmp_path, mixed_input):
    result = cli("run", mixed_input, "--backend", "classic", "--out", "out", "--no-gallery", cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # some rows failed, everything else written
    assert "Traceback" not in result.stderr
    output = result.stdout.strip().splitlines()[-1]
    assert output == os.path.join("out", "edited_step1.jsonl")
    rows = {r["id"]: r for r in read_jsonl(tmp_path / output)}
    gray = np.asarray(Image.open(tmp_path / rows["gray"]["output_image"][0]))
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    rotated = np.asarray(Image.open(tmp_path / rows["rot"]["output_image"][0]))
    expected = np.asarray(Image.open(tmp_path / "b.jpg").convert("RGB").transpose(Image.Transpose.ROTATE_270))
    assert np.array_equal(rotated, expected)
    assert rows["vase"]["output_image"] == [] and "generative backend" in rows["vase"]["output_image_error"]
    assert "not found" in rows["missing"]["output_image_error"]
    assert "2 edited, 0 skipped (done earlier), 2 failed" in result.stderr


def output_files(output_jsonl, cwd) -> dict:
    """Each output image of a run made in ``cwd``, with its modification time and bytes."""
    paths = [os.path.join(cwd, p) for row in read_jsonl(output_jsonl) for p in row["output_image"]]
    return {p: (os.stat(p).st_mtime_ns, open(p, "rb").read()) for p in paths}


def test_a_rerun_skips_done_rows(tmp_path, mixed_input):
    first = cli("run", mixed_input, "--backend", "classic", "--out", "out", "--no-gallery", cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    output = tmp_path / first.stdout.strip().splitlines()[-1]
    before, files = output.read_bytes(), output_files(output, tmp_path)
    assert len(files) == 2
    result = cli("run", mixed_input, "--backend", "classic", "--out", "out", "--no-gallery", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "0 edited, 2 skipped (done earlier), 2 failed" in result.stderr
    assert output.read_bytes() == before
    assert output_files(output, tmp_path) == files  # same bytes, and not rewritten: same modification times


def test_dry_run_reports_problems_by_line_and_generates_nothing(tmp_path, mixed_input):
    result = cli("run", mixed_input, "--backend", "classic", "--out", "out", "--dry-run", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(f"{mixed_input}:3: ") and "generative backend" in lines[0]
    assert lines[1].startswith(f"{mixed_input}:4: ") and "not found" in lines[1]
    assert "4 rows, 2 ready, 2 with problems" in result.stderr
    assert not os.path.exists(tmp_path / "out" / "edited_step1.jsonl")


def test_dry_run_checks_a_local_model_folder(tmp_path, mixed_input):
    result = cli("run", mixed_input, "--model", str(tmp_path / "no-model"), "--dry-run", cwd=tmp_path)
    assert result.returncode == 2 and "model folder not found" in result.stderr


@pytest.mark.parametrize("args, fragment", [
    (["run", "nope.jsonl", "--backend", "classic"], "input file not found: nope.jsonl"),
    (["run", "bad.jsonl", "--backend", "classic"], "bad.jsonl line 2: invalid JSON"),
    (["run", "in.jsonl", "--backend", "classic", "--batch-size", "0"], "batch_size must be a positive integer"),
])
def test_failures_are_one_short_message_and_exit_2(tmp_path, mixed_input, args, fragment):
    write_jsonl(tmp_path / "bad.jsonl", [edit_row("a.png", "Blur it."), "{oops"])
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert fragment in result.stderr and "Traceback" not in result.stderr


def test_malformed_lines_can_be_skipped(tmp_path, mixed_input):
    write_jsonl(tmp_path / "bad.jsonl", [edit_row("a.png", "Blur it."), "{oops"])
    result = cli("run", "bad.jsonl", "--backend", "classic", "--skip-malformed-lines", "--no-gallery", cwd=tmp_path)
    assert result.returncode == 0 and "line 2 skipped" in result.stderr
    (row,) = read_jsonl(tmp_path / result.stdout.strip().splitlines()[-1])
    (path,) = row["output_image"]
    blurred = Image.open(tmp_path / "a.png").convert("RGB").filter(ImageFilter.GaussianBlur(0.01 * 20))
    assert np.array_equal(np.asarray(Image.open(tmp_path / path)), np.asarray(blurred))  # 1% of the short side


def test_flux_kontext_backend_keeps_aspect_ratios(tmp_path, mixed_images, tiny_model_dir):
    rows = [edit_row(os.path.basename(p), "Make it red.") for p in mixed_images.values()]
    jsonl = write_jsonl(tmp_path / "in.jsonl", rows)
    result = cli("run", jsonl, "--model", tiny_model_dir, "--steps", "2", "--height", "64", "--width", "64",
                 "--batch-size", "2", "--images-per-prompt", "2", "--out", "out", "--no-gallery", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = read_jsonl(tmp_path / result.stdout.strip().splitlines()[-1])
    for row, (w, h) in zip(out, [(200, 100), (120, 120), (90, 180)]):
        assert len(row["output_image"]) == 2
        out_w, out_h = Image.open(tmp_path / row["output_image"][0]).size
        assert out_w / out_h == pytest.approx(w / h, rel=0.05)


def test_fp8_scaling_is_part_of_the_run_and_a_change_is_refused_on_resume(tmp_path, mixed_images, tiny_model_dir):
    rows = [edit_row(os.path.basename(p), "Make it red.") for p in mixed_images.values()][:1]
    jsonl = write_jsonl(tmp_path / "in.jsonl", rows)
    common = ["run", jsonl, "--model", tiny_model_dir, "--steps", "2", "--height", "64", "--width", "64",
              "--out", "out", "--no-gallery"]
    first = cli(*common, "--fp8", "--tune-kernels", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    progress = next((tmp_path / "out").glob("*.progress.jsonl")).read_text().splitlines()[0]
    assert '"fp8": "rowwise"' in progress  # --fp8 means the default scaling, recorded by name
    again = cli(*common, "--fp8-scaling", "tensorwise", cwd=tmp_path)
    assert again.returncode == 2 and "fp8" in again.stderr


def test_a_run_writes_its_gallery_and_the_gallery_command_rebuilds_it(tmp_path, mixed_input):
    result = cli("run", mixed_input, "--backend", "classic", "--out", "out", cwd=tmp_path)
    page = tmp_path / "out" / "edited_step1.gallery.html"
    assert result.returncode == 1 and page.is_file()
    html = page.read_text()
    assert "Rotate the image 90 degrees clockwise." in html and "generative backend" in html
    page.unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    rebuilt = cli("gallery", str(tmp_path / "out" / "edited_step1.jsonl"), cwd=elsewhere)
    assert rebuilt.returncode == 0 and rebuilt.stdout.strip().splitlines()[-1] == str(page)
    assert page.is_file()


def eight_mixed_rows(tmp_path):
    sizes = [(200, 100), (120, 120), (90, 180), (160, 90)]
    rows = [edit_row(os.path.basename(write_image(tmp_path / f"m{i}.png", *sizes[i % 4], seed=i)), f"edit {i}")
            for i in range(8)]
    return write_jsonl(tmp_path / "mixed.jsonl", rows), [sizes[i % 4] for i in range(8)]


@pytest.mark.slow
@pytest.mark.parametrize("engine_args", [["--devices", "cpu,cpu"]], ids=["two-cpu-workers"])
def test_a_scaled_out_run_completes_mixed_rows_and_a_rerun_redoes_nothing(tmp_path, tiny_model_dir, engine_args):
    jsonl, sizes = eight_mixed_rows(tmp_path)
    args = ["run", jsonl, "--backend", "flux-kontext", "--model", tiny_model_dir, "--steps", "2", "--height", "64",
            "--width", "64", "--batch-size", "2", "--out", "out", *engine_args]
    first = cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    output = first.stdout.strip().splitlines()[-1]
    assert output == os.path.join("out", "edited_step1.jsonl")
    for row, (w, h) in zip(read_jsonl(tmp_path / output), sizes):
        out_w, out_h = Image.open(tmp_path / row["output_image"][0]).size
        assert out_w / out_h == pytest.approx(w / h, rel=0.05)
    again = cli(*args, cwd=tmp_path)
    assert again.returncode == 0 and "0 edited, 8 skipped (done earlier), 0 failed" in again.stderr


def test_speed_flags_that_cannot_combine_are_refused_before_any_work(tmp_path, mixed_input):
    result = cli("run", mixed_input, "--cuda-graphs", "--offload", "model", "--out", "out", cwd=tmp_path)
    assert result.returncode == 2
    assert "cuda_graphs cannot be combined with offload" in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_output_folder_that_cannot_be_made_is_one_line_before_any_model_loads(tmp_path, mixed_input):
    (tmp_path / "blocker").write_text("a file where a folder should go")
    for out in ("/proc/forbidden", str(tmp_path / "blocker" / "out")):
        # flux-kontext with a model that does not exist: the folder problem must be said before any model load
        result = cli("run", mixed_input, "--model", str(tmp_path / "no-model"), "--out", out, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        lines = [line for line in result.stderr.splitlines() if "<frozen runpy>" not in line]  # python -m's own
        assert len(lines) == 1 and lines[0].startswith("error: cannot create the output folder " + out)


def test_a_10_mb_instruction_fails_its_row_at_once_and_is_not_copied_into_the_reports(tmp_path):
    """Such a row used to pin a core for over 12 minutes, then put 20 MB into its error, the progress file and
    the gallery each."""
    write_image(tmp_path / "a.png", 40, 20)
    huge = "make it brighter, " * 600_000 + "then flip it"
    write_jsonl(tmp_path / "in.jsonl", [edit_row("a.png", huge, id="huge"), edit_row("a.png", "Blur it.", id="ok")])
    result = cli("run", "in.jsonl", "--backend", "classic", "--out", "out", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    rows = {row["id"]: row for row in read_jsonl(tmp_path / "out" / "edited_step1.jsonl")}
    error = rows["huge"]["output_image_error"]
    assert "10,800,012 characters long" in error and len(error) < 300
    assert rows["ok"]["output_image"] and rows["huge"]["conversations"][0]["content"] == huge  # the row as given
    assert os.path.getsize(next((tmp_path / "out").glob("*.progress.jsonl"))) < 10_000
    assert os.path.getsize(tmp_path / "out" / "edited_step1.gallery.html") < 20_000


def test_hints_name_the_flags_of_the_cli(tmp_path, mixed_input):
    """The CLI's hints named the seed script's --skip_malformed_lines and --hf_model_name_or_path."""
    (tmp_path / "bad.jsonl").write_text('{"images": "a.png", "conversations": "Unterminated', encoding="utf-8")
    result = cli("run", "bad.jsonl", "--backend", "classic", cwd=tmp_path)
    assert result.returncode == 2
    assert "(Unterminated string starting at column" in result.stderr and "at at" not in result.stderr
    assert "--skip-malformed-lines" in result.stderr and "--skip_malformed_lines" not in result.stderr

    result = cli("run", mixed_input, "--model", "nobody/no-model", "--out", "out", cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if "RuntimeWarning" not in line]
    assert lines == ["error: nobody/no-model is not in the Hugging Face cache, and HF_HUB_OFFLINE forbids "
                     "downloading it. Download it elsewhere and pass the local folder instead "
                     "(--model /path/to/no-model)."]


def test_an_input_with_other_column_names_stops_before_any_work_naming_the_flags(tmp_path):
    """Every row used to fail alike, one by one: "the row has no field 'images' (its fields: image, ...)"."""
    write_image(tmp_path / "a.png", 40, 20)
    write_jsonl(tmp_path / "in.jsonl", [{"image": "a.png", "instruction": "Blur it.", "source": "web"}] * 3)
    result = cli("run", "in.jsonl", "--backend", "classic", "--out", "out", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(
        "name the columns to read with --image-key image --conversation-key instruction")
    assert not (tmp_path / "out" / "edited_step1.jsonl").exists()
    again = cli("run", "in.jsonl", "--backend", "classic", "--out", "out", "--image-key", "image",
                "--conversation-key", "instruction", "--no-gallery", cwd=tmp_path)
    assert again.returncode == 0 and "3 edited" in again.stderr


def test_the_classic_backend_refuses_several_images_per_row_and_says_which_flags_it_ignores(tmp_path, mixed_input):
    """Both used to be accepted silently: --images-per-prompt gave nothing more, --seed changed nothing."""
    refused = cli("run", mixed_input, "--backend", "classic", "--images-per-prompt", "3", "--out", "out",
                  cwd=tmp_path)
    assert refused.returncode == 2 and not (tmp_path / "out" / "edited_step1.jsonl").exists()
    assert "--images-per-prompt 3: the classic backend's edits are exact" in refused.stderr
    noted = cli("run", mixed_input, "--backend", "classic", "--seed", "7", "--width", "512", "--out", "out",
                "--no-gallery", cwd=tmp_path)
    assert noted.returncode == 1 and "2 edited" in noted.stderr
    assert noted.stderr.count("note: the classic backend ignores --seed, --width:") == 1
    plain = cli("run", mixed_input, "--backend", "classic", "--out", "out2", "--no-gallery", cwd=tmp_path)
    assert "ignores" not in plain.stderr
