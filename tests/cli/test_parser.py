"""The parsers of every command line: no abbreviated flags, and help that shows each flag's default."""

import argparse
import contextlib
import io

import pytest

from dataflow.cli.main import build_parser
from dataflow.statics.pipelines.api_pipelines import image_editing_api_pipeline
from dataflow.statics.pipelines.gpu_pipelines import image_editing_pipeline

COMMANDS = ("run", "score", "filter", "export", "gallery")
REQUIRED = {"export": ["--format", "hf", "--out", "x"]}


def subparsers(parser: argparse.ArgumentParser) -> dict:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


def parse_exit_code(parser: argparse.ArgumentParser, argv: list) -> int:
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            return exc.code
    return 0


def long_flags(parser: argparse.ArgumentParser) -> set:
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--")}


def test_output_is_not_taken_for_output_key():
    """``--output runs/e2`` once ran into the default folder with a column named "runs/e2"."""
    assert parse_exit_code(build_parser(), ["run", "in.jsonl", "--output", "runs/e2"]) == 2


@pytest.mark.parametrize("command", COMMANDS)
def test_no_subcommand_takes_an_abbreviated_flag(command):
    parser = build_parser()
    flags = long_flags(subparsers(parser)[command])
    for flag in flags:
        prefix = flag[:-1]
        if prefix not in flags and prefix != "--":
            argv = [command, "in.jsonl", *REQUIRED.get(command, []), prefix]
            assert parse_exit_code(parser, argv) == 2, f"{command} {prefix} was taken for {flag}"


@pytest.mark.parametrize("script", [image_editing_pipeline, image_editing_api_pipeline])
def test_no_seed_script_takes_an_abbreviated_flag(script):
    parser = script.build_parser()
    flags = long_flags(parser)
    for flag in flags:
        prefix = flag[:-1]
        if prefix not in flags and prefix != "--":
            assert parse_exit_code(parser, [prefix, "x"]) == 2, f"{prefix} was taken for {flag}"


def test_run_help_describes_every_flag_with_its_default():
    run = subparsers(build_parser())["run"]
    text = " ".join(run.format_help().split())  # as read, whatever the terminal width wraps
    for action in run._actions:
        if action.option_strings:
            assert action.help, f"{action.option_strings[0]} has no help text"
    for fragment in ("--height HEIGHT", "(default: 1024)", "(default: images)", "(default: conversations)",
                     "(default: output_image)", "(default: dataflow-edit-output)"):
        assert fragment in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_version_prints_the_package_version():
    import dataflow

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0 and out.getvalue().strip() == f"dataflow-edit {dataflow.__version__}"
