"""``dataflow-edit export``: summary on stderr, the folder on stdout, exit 1 for missing images, 2 for bad options."""

from __future__ import annotations

import argparse
import os

import pytest

from dataflow.cli.exits import run_main
from dataflow.cli.export import add_export_parser, command_export


def cli(argv) -> int:
    """The export command as ``dataflow-edit`` runs it (its parser and its error handling)."""
    parser = argparse.ArgumentParser(prog="dataflow-edit")
    add_export_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run_main(lambda: command_export(args), debug=args.debug)


def test_a_missing_edited_image_is_named_counted_and_the_export_goes_on(run, tmp_path, capsys):
    os.unlink(run.edited[("r1", 0)])
    out = str(tmp_path / "hf")
    assert cli(["export", run.output, "--format", "hf", "--out", out]) == 1
    printed = capsys.readouterr()
    assert printed.out.strip().splitlines()[-1] == out
    assert "not exported: edited_step1.jsonl line 2, output 0: edited image not found: " in printed.err
    assert "sample_1_0.png" in printed.err and "Traceback" not in printed.err
    assert "exported 3 examples (hf) from 4 rows" in printed.err and "1 missing images" in printed.err
    assert "1 failed rows left out" in printed.err and "1 shards" in printed.err


def test_a_missing_source_image_fails_only_its_row(run, tmp_path, capsys):
    os.unlink(run.sources["b.jpg"])
    assert cli(["export", run.output, "--format", "webdataset", "--out", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err
    assert "source image not found" in err and "exported 2 examples" in err


def test_a_clean_export_exits_0(run, tmp_path, capsys):
    assert cli(["export", run.scored, "--format", "ip2p", "--out", str(tmp_path / "p"), "--shard-size", "2"]) == 0
    assert "exported 4 examples (ip2p)" in capsys.readouterr().err
    assert len(os.listdir(tmp_path / "p" / "data")) == 2


@pytest.mark.parametrize("extra, message", [
    (["--shard-size", "0"], "--shard-size must be a positive integer"),
    (["--rejected", "nope.jsonl"], "input file not found: nope.jsonl"),
])
def test_bad_options_exit_2_with_one_line(run, tmp_path, capsys, extra, message):
    assert cli(["export", run.output, "--format", "hf", "--out", str(tmp_path / "x"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_rejected_with_ai_toolkit_and_a_missing_input_exit_2(run, tmp_path, capsys):
    assert cli(["export", run.filtered, "--format", "ai-toolkit", "--out", str(tmp_path / "a"),
                "--rejected", run.rejected]) == 2
    assert cli(["export", str(tmp_path / "none.jsonl"), "--format", "hf", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "no place to mark rejected" in err and "input file not found" in err


def test_a_row_without_an_instruction_is_a_bad_row_and_others_export(run, tmp_path, capsys):
    from tests.conftest import read_jsonl, write_jsonl

    rows = read_jsonl(run.output)
    rows[0]["conversations"] = []
    broken = write_jsonl(os.path.join(run.out, "edited_step1.jsonl"), rows)
    assert cli(["export", broken, "--format", "webdataset", "--out", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err
    assert "not exported: edited_step1.jsonl line 1: 'conversations' is empty" in err
    assert "exported 3 examples" in err and "1 bad rows" in err


@pytest.mark.parametrize("fmt", ["hf", "ip2p", "webdataset", "ai-toolkit"])
def test_a_truncated_edited_png_is_named_counted_and_not_embedded(run, tmp_path, capsys, fmt):
    path = run.edited[("r0", 0)]
    whole = open(path, "rb").read()
    with open(path, "wb") as handle:  # cut short, as by a full disk or a copy that stopped
        handle.write(whole[: len(whole) * 2 // 3])
    assert cli(["export", run.output, "--format", fmt, "--out", str(tmp_path / fmt)]) == 1
    err = capsys.readouterr().err
    assert "sample_0_0.png (truncated PNG: the 'IDAT' chunk at byte" in err and "1 missing images" in err
