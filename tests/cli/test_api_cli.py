"""``dataflow-edit run IN --backend api ...`` against the local test server."""

import os

import numpy as np
import pytest
from PIL import Image

from dataflow.cli.main import main
from dataflow.core.seeding import image_seed
from dataflow.io import ImageIO
from tests.conftest import edit_row, read_jsonl, write_image, write_jsonl
from tests.serving.api.server import MODEL, edit_server, expected_edit  # noqa: F401  (edit_server: the fixture)


@pytest.fixture
def rows(tmp_path):
    def make(n, prompt=lambda i: f"cli edit {i}"):
        items = [edit_row(os.path.basename(write_image(tmp_path / f"in{i}.png", 16, 12 + i, seed=i)), prompt(i),
                          id=f"r{i}") for i in range(n)]
        return write_jsonl(tmp_path / "in.jsonl", items)

    return make


@pytest.fixture
def key(monkeypatch):
    monkeypatch.delenv("DF_BASE_URL", raising=False)
    monkeypatch.setenv("DF_API_KEY", "test-key")


def run(capsys, *args):
    code = main(["run", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def api_args(server, jsonl, out, fmt="openai", *more):
    return [jsonl, "--backend", "api", "--api-format", fmt, "--api-url", server.url, "--model", MODEL, "--out",
            str(out), "--no-gallery", *more]


def check_pixels(tmp_path, output):
    reader = ImageIO()
    for row in read_jsonl(output):
        (path,) = row["output_image"]
        expected = expected_edit([reader.read(str(tmp_path / row["images"]))], row["conversations"][-1]["content"])
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), expected), row["id"]


@pytest.mark.parametrize("fmt", ["openai", "gemini"])
def test_run_with_the_api_backend_edits_every_row(tmp_path, edit_server, rows, key, capsys, fmt):
    code, out, err = run(capsys, *api_args(edit_server, rows(4), tmp_path / "out", fmt))
    assert code == 0, err
    output = out.strip().splitlines()[-1]
    check_pixels(tmp_path, output)
    assert "requests: 4" in err  # the usage line: what was sent (and paid for)


def test_a_rerun_sends_no_request(tmp_path, edit_server, rows, key, capsys):
    args = api_args(edit_server, rows(3), tmp_path / "out")
    assert run(capsys, *args)[0] == 0
    assert run(capsys, *args)[0] == 0
    assert len(edit_server.edits()) == 3


def test_max_concurrency_and_a_seed_in_extra_body(tmp_path, edit_server, rows, key, capsys):
    edit_server.delay = 0.1
    code, _, err = run(capsys, *api_args(edit_server, rows(6), tmp_path / "out", "gemini", "--max-concurrency", "2",
                                         "--extra-body", '{"seed": 3}'))
    assert code == 0, err
    assert edit_server.max_in_flight <= 2
    seeds = {r.prompt: r.body["generationConfig"]["seed"] for r in edit_server.edits()}
    assert seeds == {f"cli edit {i}": image_seed(3, f"id:r{i}", 0) % 2**31 for i in range(6)}


def test_a_bad_key_exits_2_naming_the_problem(tmp_path, edit_server, rows, monkeypatch, capsys):
    monkeypatch.setenv("DF_API_KEY", "sk-nope-0123456789abcdef")
    code, out, err = run(capsys, *api_args(edit_server, rows(20), tmp_path / "out"))
    assert code == 2
    assert "error:" in err and "HTTP 401" in err and "DF_API_KEY" in err
    assert len(edit_server.edits()) <= 8
    assert "0123456789abcdef" not in out + err and "cdef" not in err


def test_no_key_is_fine_for_a_server_that_needs_none(tmp_path, edit_server, rows, monkeypatch, capsys):
    monkeypatch.delenv("DF_API_KEY", raising=False)
    edit_server.key = None
    code, _, err = run(capsys, *api_args(edit_server, rows(2), tmp_path / "out"))
    assert code == 0, err
    assert all("authorization" not in r.headers for r in edit_server.edits())


def test_the_base_url_may_come_from_df_base_url(tmp_path, edit_server, rows, key, monkeypatch, capsys):
    monkeypatch.setenv("DF_BASE_URL", edit_server.url + "/v1")
    code, _, err = run(capsys, rows(1), "--backend", "api", "--model", MODEL, "--out", str(tmp_path / "o"),
                       "--no-gallery")
    assert code == 0, err
    assert len(edit_server.edits()) == 1


def test_a_refused_row_fails_alone_with_exit_1(tmp_path, edit_server, rows, key, capsys):
    code, out, err = run(capsys, *api_args(edit_server, rows(3, lambda i: "REFUSE" if i == 1 else f"ok {i}"),
                                           tmp_path / "out"))
    assert code == 1
    out_rows = read_jsonl(out.strip().splitlines()[-1])
    assert [bool(r["output_image"]) for r in out_rows] == [True, False, True]
    assert "moderation_blocked" in out_rows[1]["output_image_error"]


def test_dry_run_checks_the_api_without_generating(tmp_path, edit_server, rows, key, capsys):
    code, _, err = run(capsys, *api_args(edit_server, rows(2), tmp_path / "out", "openai", "--dry-run"))
    assert code == 0, err
    assert "note:" in err and "answers" in err
    assert edit_server.edits() == [] and [r.kind for r in edit_server.received] == ["models"]


def test_a_dry_run_with_a_bad_key_exits_2(tmp_path, edit_server, rows, monkeypatch, capsys):
    monkeypatch.setenv("DF_API_KEY", "wrong")
    code, _, err = run(capsys, *api_args(edit_server, rows(1), tmp_path / "out", "gemini", "--dry-run"))
    assert code == 2 and "DF_API_KEY" in err


def test_extra_body_must_be_a_json_object(tmp_path, edit_server, rows, key, capsys):
    for bad in ("{not json", "[1, 2]"):
        with pytest.raises(SystemExit) as info:
            main(["run", *api_args(edit_server, rows(1), tmp_path / "out", "openai", "--extra-body", bad)])
        assert info.value.code == 2
    assert "--extra-body" in capsys.readouterr().err


def test_a_default_model_the_service_does_not_have_exits_2_in_one_line_naming_it(tmp_path, edit_server, rows, key,
                                                                                    capsys):
    code, out, err = run(capsys, rows(5), "--backend", "api", "--api-url", edit_server.url, "--out",
                         str(tmp_path / "out"), "--no-gallery")
    assert code == 2
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: the model 'gpt-image-2.5-sunburst' does not exist at {edit_server.url}/v1 "
                           "(HTTP 404: The model `gpt-image-2.5-sunburst` does not exist")
    assert "current GPT image models:" in line and "Traceback" not in err
    assert len(edit_server.edits()) <= 8  # the run stopped; the rows in flight were the only ones sent


def test_the_new_options_reach_the_server_and_the_summary_says_the_bytes_sent(tmp_path, edit_server, rows, key,
                                                                             capsys):
    code, _, err = run(capsys, *api_args(edit_server, rows(2), tmp_path / "o1", "openai", "--quality", "high",
                                         "--input-fidelity", "low", "--background", "opaque", "--size",
                                         "match_input"))
    assert code == 0, err
    assert {(r.fields["quality"], r.fields["input_fidelity"], r.fields["background"], r.fields["size"])
            for r in edit_server.edits()} == {("high", "low", "opaque", "1536x1024")}  # 16x12, 16x13
    sent = sum(r.size for r in edit_server.edits())
    assert f"request bytes: {sent}" in err
    code, _, err = run(capsys, *api_args(edit_server, rows(1), tmp_path / "o2", "gemini", "--aspect-ratio",
                                         "match_input", "--image-size", "2K", "--multi-turn"))
    assert code == 0, err
    assert edit_server.edits()[-1].body["generationConfig"]["imageConfig"] == {"aspectRatio": "4:3",
                                                                               "imageSize": "2K"}


def test_an_option_of_the_other_format_exits_2_naming_it(tmp_path, edit_server, rows, key, capsys):
    code, _, err = run(capsys, *api_args(edit_server, rows(1), tmp_path / "out", "gemini", "--quality", "high"))
    assert code == 2 and "quality is not an option of the gemini format" in err and edit_server.edits() == []
