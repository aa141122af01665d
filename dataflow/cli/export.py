"""``dataflow-edit export``: a run's output (plain, scored or filtered) as a training-ready dataset.

    dataflow-edit export OUTPUT.jsonl --format hf|webdataset|ip2p|ai-toolkit --out DIR [--shard-size N]
        [--include-failed] [--rejected FILE] [--preference FILE] [--image-format png|jpeg]

It reads the run's ``run.json`` beside its input to find the source and edited images. Each example that cannot
be exported (a missing image) is named on stderr and the export goes on; the exit code is then 1. A summary goes
to stderr; the last line on stdout is the export folder.
"""

from __future__ import annotations

import argparse
import sys

from dataflow.core.errors import InputError


def add_export_parser(commands) -> None:
    export = commands.add_parser("export", help="write a run's edits as a training dataset (parquet, WebDataset, "
                                                "trainer layouts)")
    add = export.add_argument
    add("input", help="a run's output file (edited_step1.jsonl, or a scored or filtered one)")
    add("--format", required=True, choices=("hf", "webdataset", "ip2p", "ai-toolkit"),
        help="hf: parquet shards + dataset card for datasets.load_dataset; webdataset: tar shards; ip2p: parquet with "
             "diffusers train_instruct_pix2pix.py's columns; ai-toolkit: targets/ + control/ folders")
    add("--out", required=True, help="export folder; a rerun replaces the files an earlier export of the format "
                                     "wrote there")
    add("--shard-size", type=int, default=1000, help="examples per parquet or tar shard")
    add("--include-failed", action="store_true",
        help="hf: export failed rows too, with a null edited_image and their error (other formats leave them out)")
    add("--rejected", default=None, metavar="FILE",
        help="a filter step's _rejected file: export its edits too, marked rejected (not for ai-toolkit)")
    add("--preference", default=None, metavar="FILE",
        help="a select step's _preference file: export the input as the sft split and these pairs as the "
             "preference split (hf, webdataset)")
    add("--image-format", choices=("png", "jpeg"), default="png",
        help="how images are stored: png copies PNG files as they are and re-encodes others losslessly; jpeg "
             "copies JPEG files and encodes the others at quality 95")
    add("--debug", action="store_true", help="show tracebacks")


def command_export(args: argparse.Namespace) -> int:
    from dataflow.exporters import export

    if args.shard_size is not None and args.shard_size <= 0:
        raise InputError(f"--shard-size must be a positive integer, got {args.shard_size}")
    summary = export(args.input, args.format, args.out, shard_size=args.shard_size,
                     include_failed=args.include_failed, rejected=args.rejected, image_format=args.image_format,
                     preference=args.preference,
                     on_problem=lambda problem: print(f"not exported: {problem}", file=sys.stderr),
                     progress=True)
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    print(summary.describe(), file=sys.stderr)
    print(f"card: {summary.card}", file=sys.stderr)
    print(summary.out)
    return summary.exit_code
