"""``dataflow-edit score``, ``filter`` and ``select``: the steps between a run's output and a training set.

    dataflow-edit score OUTPUT.jsonl --metrics change,clip,dino,judge,editscore [--clip-model M] ...
    dataflow-edit filter SCORED.jsonl --min clip_t=0.2 --max dino=0.95 [--drop-no-change]
    dataflow-edit select SCORED.jsonl --best-by editscore [--min-margin X] [--min NAME=VALUE] [--max NAME=VALUE]

Both read the run's ``run.json`` beside their input, to find the source images (relative to the run's input file)
and the edited ones (relative to the folder the run was started in), and write one beside their own output, so
the gallery can be rebuilt for a scored or filtered file. The last line on stdout is the output file's path.
"""

from __future__ import annotations

import argparse
import os
import sys

from dataflow.core.errors import InputError
from dataflow.io.atomic import ensure_writable_folder
from dataflow.reports.gallery import build_gallery_from_manifest
from dataflow.utils.manifest import read_manifest, run_folders, write_manifest
from dataflow.utils.storage import FileStorage, RowStream

METRICS = ("change", "clip", "dino", "judge", "editscore")
KEY_VARIABLE = "DF_API_KEY"


def add_score_parser(commands) -> None:
    score = commands.add_parser("score", help="score each edited image of a run's output")
    add = score.add_argument
    add("input", help="a run's output file (its edited_step1.jsonl)")
    add("--metrics", default="change", help=f"comma-separated, from {', '.join(METRICS)}")
    add("--clip-model", default=None, help="CLIP model folder or Hub id (default openai/clip-vit-large-patch14)")
    add("--dino-model", default=None, help="DINOv2 model folder or Hub id (default facebook/dinov2-base)")
    add("--judge-model", default=None, help="the judge: a local VLM folder, or the model name at --judge-api-url")
    add("--judge-api-url", default=None,
        help="an OpenAI-compatible server for the judge (POST {url}/chat/completions); key from $DF_API_KEY")
    add("--editscore-model", default=None,
        help="editscore: the base VLM folder or Hub id (default Qwen/Qwen2.5-VL-7B-Instruct)")
    add("--editscore-lora", default=None,
        help="editscore: the adapter folder or Hub id (default EditScore/EditScore-7B); 'none' for the base alone")
    add("--max-concurrency", type=int, default=8, help="judge requests in flight at once")
    add("--batch-size", type=int, default=8, help="rows per scoring call")
    add("--save-interval", type=int, default=10, help="scored rows per durable checkpoint")
    add("--out", default=None, help="output folder (default: the input's folder)")
    add("--no-gallery", action="store_true", help="do not write this step's gallery (beside its output file)")
    add("--debug", action="store_true", help="show tracebacks")


def add_filter_parser(commands) -> None:
    keep = commands.add_parser("filter", help="keep the edits whose scores pass thresholds")
    add = keep.add_argument
    add("input", help="a scored file (from dataflow-edit score)")
    add("--min", action="append", default=[], metavar="NAME=VALUE",
        help="keep edits whose score NAME is at least VALUE (e.g. clip_t=0.2, judge.overall=6); repeatable")
    add("--max", action="append", default=[], metavar="NAME=VALUE",
        help="keep edits whose score NAME is at most VALUE (e.g. dino=0.95, change.ssim=0.98); repeatable")
    add("--drop-no-change", action="store_true", help="reject edits that changed (almost) nothing")
    add("--out", default=None, help="output folder (default: the input's folder)")
    add("--no-gallery", action="store_true", help="do not write this step's gallery (beside its output file)")
    add("--debug", action="store_true", help="show tracebacks")


def add_select_parser(commands) -> None:
    select = commands.add_parser("select", help="best-of-N: keep each row's best candidate (SFT), pair it with the "
                                                "worse ones (preference), keep the rest as negatives")
    add = select.add_argument
    add("input", help="a scored file of a run with --candidates N (from dataflow-edit score)")
    add("--best-by", required=True, metavar="SCORE",
        help="the ranking score, higher is better: a score name (editscore.overall, judge.overall, clip_t) or a "
             "metric (editscore, judge: its overall)")
    add("--min-margin", type=float, default=0.0,
        help="a (best, worse) preference pair needs a score gap of at least this much (and above 0)")
    add("--min", action="append", default=[], metavar="NAME=VALUE",
        help="the best candidate must score at least VALUE on NAME to be SFT data; repeatable")
    add("--max", action="append", default=[], metavar="NAME=VALUE",
        help="the best candidate must score at most VALUE on NAME to be SFT data; repeatable")
    add("--drop-no-change", action="store_true", help="the best candidate must have changed the image")
    add("--out", default=None, help="output folder (default: the input's folder)")
    add("--no-gallery", action="store_true", help="do not rewrite gallery.html")
    add("--debug", action="store_true", help="show tracebacks")


def metric_options(args: argparse.Namespace, names: list) -> dict:
    """Per metric, the options the flags give it (nothing for a metric not asked for)."""
    options = {
        "clip": {"model": args.clip_model} if args.clip_model else {},
        "dino": {"model": args.dino_model} if args.dino_model else {},
        "judge": judge_options(args),
        "editscore": editscore_options(args),
    }
    return {name: options[name] for name in names if options.get(name)}


def editscore_options(args: argparse.Namespace) -> dict:
    options = {"model": args.editscore_model} if args.editscore_model else {}
    if args.editscore_lora:
        options["lora"] = None if args.editscore_lora.lower() == "none" else args.editscore_lora
    return options


def judge_options(args: argparse.Namespace) -> dict:
    if args.judge_api_url and not args.judge_model:
        raise InputError("--judge-api-url needs --judge-model: the name of the judge model that server serves")
    if args.judge_api_url:
        return {"api_url": args.judge_api_url, "model": args.judge_model, "api_key": os.environ.get(KEY_VARIABLE),
                "max_concurrency": args.max_concurrency}
    return {"model": args.judge_model} if args.judge_model else {}


def parse_metrics(text: str) -> list:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METRICS]
    if not names or unknown:
        raise InputError(f"--metrics takes names from {', '.join(METRICS)}, got {text!r}")
    return names


def parse_thresholds(values: list, flag: str) -> dict:
    """``["clip_t=0.2", "dino=0.9,ssim=0.98"]`` -> ``{"clip_t": 0.2, ...}``; ``InputError`` naming a bad pair."""
    thresholds = {}
    for pair in (p.strip() for value in values for p in value.split(",") if p.strip()):
        name, sep, number = pair.partition("=")
        try:
            thresholds[name.strip()] = float(number)
        except ValueError:
            raise InputError(f"{flag} takes NAME=VALUE with a number, got {pair!r}") from None
        if not sep or not name.strip():
            raise InputError(f"{flag} takes NAME=VALUE with a number, got {pair!r}")
    return thresholds


def step_storage(args: argparse.Namespace, prefix: str) -> tuple[FileStorage, str]:
    """The step's storage (reading ``args.input``, writing under ``--out``) and its output folder, checked."""
    RowStream(args.input)  # a missing or unsupported input file is said before any model loads
    out = args.out or os.path.dirname(args.input) or "."
    ensure_writable_folder(out, "output folder")
    return FileStorage(args.input, cache_path=out, file_name_prefix=prefix), out


def carry_manifest(source_file: str, out: str) -> None:
    """The run's manifest, beside the new step's file too (it names the same inputs)."""
    source = os.path.dirname(os.path.abspath(source_file))
    manifest = read_manifest(source)
    if manifest and os.path.abspath(out) != source:
        write_manifest(out, manifest)


def command_score(args: argparse.Namespace) -> int:
    from dataflow.operators.core_vision import ImageEditEvaluator

    names = parse_metrics(args.metrics)
    folders = run_folders(args.input)
    evaluator = ImageEditEvaluator(names, metric_options(args, names), batch_size=args.batch_size,
                                   save_interval=args.save_interval, edited_dir=folders.run_dir,
                                   source_dir=folders.input_dir)
    storage, out = step_storage(args, "scored")
    keys = folders.keys
    summary = evaluator.run(storage.step(), input_image_key=keys.get("image_key", "images"),
                            input_conversation_key=keys.get("conversation_key", "conversations"),
                            input_edited_key=keys.get("output_key", "output_image"))
    carry_manifest(args.input, out)
    print(f"scored: {summary.total} rows, {summary.generated} scored, {summary.reused} done earlier, "
          f"{summary.failed} failed, {summary.seconds:.1f} s", file=sys.stderr)
    if summary.describe_usage():
        print(f"judge: {summary.describe_usage()}", file=sys.stderr)
    if not args.no_gallery:
        print(f"gallery: {build_gallery_from_manifest(summary.output_path)}", file=sys.stderr)
    print(summary.output_path)
    return summary.exit_code


def command_filter(args: argparse.Namespace) -> int:
    from dataflow.operators.core_vision import ImageEditFilter

    selector = ImageEditFilter(min=parse_thresholds(args.min, "--min"), max=parse_thresholds(args.max, "--max"),
                               drop_no_change=args.drop_no_change)
    storage, out = step_storage(args, "filtered")
    summary = selector.run(storage.step(), input_edited_key=run_folders(args.input).keys.get("output_key",
                                                                                            "output_image"))
    carry_manifest(args.input, out)
    print(summary.describe(), file=sys.stderr)
    print(f"rejected: {summary.rejected_path}", file=sys.stderr)
    if not args.no_gallery:
        print(f"gallery: {build_gallery_from_manifest(summary.output_path)}", file=sys.stderr)
    print(summary.output_path)
    return 0


def command_select(args: argparse.Namespace) -> int:
    from dataflow.operators.core_vision import ImageEditSelector

    selector = ImageEditSelector(args.best_by, min_margin=args.min_margin, min=parse_thresholds(args.min, "--min"),
                                 max=parse_thresholds(args.max, "--max"), drop_no_change=args.drop_no_change)
    storage, out = step_storage(args, "selected")
    keys = run_folders(args.input).keys
    summary = selector.run(storage.step(), input_edited_key=keys.get("output_key", "output_image"))
    carry_manifest(args.input, out)
    print(summary.describe(), file=sys.stderr)
    print(f"preference: {summary.preference_path}", file=sys.stderr)
    print(f"rejected: {summary.rejected_path}", file=sys.stderr)
    print(f"counts: {summary.report_path}", file=sys.stderr)
    if not args.no_gallery:
        print(f"gallery: {build_gallery_from_manifest(summary.output_path)}", file=sys.stderr)
    print(summary.output_path)
    return 0
