"""The API pipeline script, run from the command line against the local test server (in this process)."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from dataflow.io import ImageIO
from tests.conftest import edit_row, read_jsonl, write_image, write_jsonl
from tests.serving.api.server import MODEL, edit_server, expected_edit  # noqa: F401  (edit_server: the fixture)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "dataflow", "statics", "pipelines", "api_pipelines", "image_editing_api_pipeline.py")
OUTPUT = "./cache_local/image_edit_api/dataflow_cache_step_step1.jsonl"
PROGRESS = os.path.join("cache_local", "image_edit_api", "dataflow_cache_step_step1.progress.jsonl")
SAVE_INTERVAL, CONCURRENCY = 5, 8


def make_input(folder, n):
    rows = [edit_row(os.path.basename(write_image(folder / f"in{i}.png", 12 + i % 3 * 4, 12, seed=i)),
                     f"edit row {i}", id=f"row-{i}") for i in range(n)]
    return write_jsonl(folder / "in.jsonl", rows)


def script_args(jsonl, server, fmt="openai", *more):
    return [sys.executable, SCRIPT, "--first_entry_file_name", jsonl, "--api_format", fmt, "--api_url", server.url,
            "--model_name", MODEL, *more]


def environment(key="test-key", **more):
    env = {k: v for k, v in os.environ.items() if k not in ("DF_API_KEY", "DF_BASE_URL")}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=REPO, PYTHONUNBUFFERED="1", **more)
    if key is not None:
        env["DF_API_KEY"] = key
    return env


def run_script(args, cwd, key="test-key", **env):
    return subprocess.run(args, cwd=cwd, env=environment(key, **env), capture_output=True, text=True, timeout=120)


def check_outputs(folder, cwd, rows):
    reader = ImageIO()
    for row in rows:
        (path,) = row["output_image"]
        edited = np.asarray(Image.open(os.path.join(cwd, path)).convert("RGB"))
        assert np.array_equal(edited, expected_edit([reader.read(str(folder / row["images"]))],
                                                    row["conversations"][-1]["content"])), row["id"]


def test_the_example_data_the_script_points_at_exists():
    from dataflow.statics.pipelines.api_pipelines.image_editing_api_pipeline import build_parser

    args = build_parser().parse_args([])
    rows = read_jsonl(args.first_entry_file_name)
    assert rows and all(os.path.isfile(os.path.join(os.path.dirname(args.first_entry_file_name), r["images"]))
                        for r in rows)
    assert args.cache_path == "./cache_local/image_edit_api" and args.max_concurrency == 8


@pytest.mark.parametrize("fmt", ["openai", "gemini"])
def test_the_script_edits_a_jsonl_through_the_api(tmp_path, edit_server, fmt):
    jsonl = make_input(tmp_path, 5)
    work = tmp_path / "work"
    work.mkdir()
    result = run_script(script_args(jsonl, edit_server, fmt), cwd=work)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == OUTPUT
    check_outputs(tmp_path, work, read_jsonl(work / OUTPUT))
    assert "api: requests: 5, retries: 0, refusals: 0, images: 5" in result.stderr


def test_the_scripts_flags_for_current_models_reach_the_server(tmp_path, edit_server):
    write_image(tmp_path / "a.png", 40, 30, seed=1)
    jsonl = write_jsonl(tmp_path / "in.jsonl", [{"images": "a.png", "conversations": [
        {"role": "user", "content": "make it red"}, {"role": "user", "content": "add a hat"}]}])
    result = run_script(script_args(jsonl, edit_server, "gemini", "--aspect_ratio", "match_input", "--image_size",
                                    "1K", "--multi_turn"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [r.prompt for r in edit_server.edits()] == ["make it red", "add a hat"]
    assert all(r.body["generationConfig"]["imageConfig"] == {"aspectRatio": "4:3", "imageSize": "1K"}
               for r in edit_server.edits())
    assert "request bytes: " in result.stderr


def test_the_base_url_comes_from_df_base_url(tmp_path, edit_server):
    jsonl = make_input(tmp_path, 2)
    args = [sys.executable, SCRIPT, "--first_entry_file_name", jsonl, "--model_name", MODEL]
    result = run_script(args, cwd=tmp_path, DF_BASE_URL=edit_server.url + "/v1")
    assert result.returncode == 0, result.stderr
    assert len(edit_server.edits()) == 2


def test_a_bad_key_exits_2_naming_the_problem_and_never_the_key(tmp_path, edit_server):
    key = "sk-wrong-abcdefghijklmnopqrstuvwxyz"
    jsonl = make_input(tmp_path, 30)
    result = run_script(script_args(jsonl, edit_server), cwd=tmp_path, key=key)
    assert result.returncode == 2, result.stderr
    assert "error:" in result.stderr and "HTTP 401" in result.stderr and "check DF_API_KEY" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(edit_server.edits()) <= CONCURRENCY
    for text in (result.stdout, result.stderr):
        assert key not in text and "wxyz" not in text


def test_a_bad_flag_value_exits_2_without_a_traceback(tmp_path, edit_server):
    result = run_script(script_args(make_input(tmp_path, 1), edit_server, "openai", "--Image_gen_task", "video"),
                        cwd=tmp_path)
    assert result.returncode == 2
    assert "Image_gen_task='video' is not supported" in result.stderr and "Traceback" not in result.stderr


def checkpointed(cwd) -> set:
    path = os.path.join(cwd, PROGRESS)
    if not os.path.exists(path):
        return set()
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()[1:]
    return {line.split('"key": "')[1].split('"')[0] for line in lines if line.endswith("}")}


def wait_for(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_kill_9_mid_run_then_rerun_pays_for_at_most_save_interval_plus_concurrency_rows_again(tmp_path, edit_server):
    n, served = 60, 23
    jsonl = make_input(tmp_path, n)
    work = tmp_path / "work"
    work.mkdir()
    edit_server.gate_after = served  # later requests hang until the gate opens: the run is caught mid-flight
    args = script_args(jsonl, edit_server, "openai", "--save_interval", str(SAVE_INTERVAL))
    proc = subprocess.Popen(args, cwd=work, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert wait_for(lambda: len(checkpointed(work)) >= served // SAVE_INTERVAL * SAVE_INTERVAL
                        and len(edit_server.edits()) >= served + CONCURRENCY), proc.stderr.read() \
            if proc.poll() is not None else "the run did not get far enough"
    finally:
        proc.kill()
        proc.wait()
    first = {r.prompt for r in edit_server.edits()}
    saved = checkpointed(work)
    assert 0 < len(saved) < n and len(first) == served + CONCURRENCY  # never more than max_concurrency in flight
    edit_server.gate_after = None
    edit_server.gate.set()
    count = len(edit_server.edits())

    result = run_script(args, cwd=work)
    assert result.returncode == 0, result.stderr
    again = [r.prompt for r in edit_server.edits()[count:]]
    paid_twice = first & set(again)
    assert len(paid_twice) <= SAVE_INTERVAL + CONCURRENCY, len(paid_twice)
    assert not {f"edit row {key.split('-')[1]}" for key in saved} & set(again)  # checkpointed rows: never again
    out = read_jsonl(work / OUTPUT)
    assert [r["id"] for r in out] == [f"row-{i}" for i in range(n)]
    assert len({r["output_image"][0] for r in out}) == n and all(len(r["output_image"]) == 1 for r in out)
    assert set(again) | first >= {f"edit row {i}" for i in range(n)}
    check_outputs(tmp_path, work, out)
