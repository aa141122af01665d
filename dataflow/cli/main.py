"""``dataflow-edit``: edit every image of a JSONL file by its instruction, from the command line.

    dataflow-edit run INPUT.jsonl [--backend flux-kontext|classic|api] [--model PATH_OR_ID_OR_NAME] [--out DIR] ...
    dataflow-edit run SHARDS_DIR --image-key image --conversation-key instruction ...   (parquet, save_to_disk, tar)
    dataflow-edit score OUTPUT.jsonl --metrics change,clip,dino,judge ...
    dataflow-edit filter SCORED.jsonl --min clip_t=0.2 --max dino=0.95 [--drop-no-change]
    dataflow-edit select SCORED.jsonl --best-by editscore [--min-margin X]   (best-of-N of run --candidates N)
    dataflow-edit export OUTPUT.jsonl --format hf|webdataset|ip2p|ai-toolkit --out DIR
    dataflow-edit gallery OUTPUT.jsonl

Progress goes to stderr (a tqdm bar and a summary); the last line on stdout is the output JSONL's path.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

from dataflow import __version__
from dataflow.cli.exits import EXIT_OK, EXIT_ROWS_FAILED, run_main
from dataflow.cli.export import add_export_parser, command_export
from dataflow.cli.instruct import add_instruct_parser, command_instruct
from dataflow.cli.parser import ArgumentParser
from dataflow.cli.scoring import (
    add_filter_parser, add_score_parser, add_select_parser, command_filter, command_score, command_select,
)
from dataflow.core.errors import InputError
from dataflow.core.serving import ImageEditServing
from dataflow.engines.select import add_engine_flags, engine_from_flags
from dataflow.io import ImageIO
from dataflow.io.atomic import ensure_writable_folder
from dataflow.io.lock import output_lock
from dataflow.logger import get_logger
from dataflow.operators.core_vision import PromptedImageEditGenerator
from dataflow.reports.gallery import build_gallery_from_manifest
from dataflow.serving.api.flags import add_api_flags
from dataflow.serving.diffusers.speed.options import Acceleration, add_acceleration_flags
from dataflow.utils.manifest import write_manifest as write_manifest_file
from dataflow.utils.storage import FileStorage, RowStream

BACKENDS = ("flux-kontext", "diffusers", "classic", "api")
DIFFUSERS_BACKENDS = ("flux-kontext", "diffusers")  # one backend: the model folder says which family it is
DEFAULT_MODEL = "black-forest-labs/FLUX.1-Kontext-dev"
OUTPUT_PREFIX = "edited"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="dataflow-edit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="edit the images of an input file")
    add = run.add_argument
    add("input", help="input .jsonl (or .json, .csv, .parquet), a folder of parquet shards, a datasets.save_to_disk "
                      "folder, or WebDataset .tar shards ('edit-{000000..000009}.tar')")
    add("--backend", choices=BACKENDS, default="flux-kontext",
        help="flux-kontext (or diffusers): a local diffusers model on the GPU, FLUX.1 Kontext by default, or "
             "Qwen-Image-Edit / FLUX.2 as its folder says; classic: exact global edits with Pillow (CPU); "
             "api: a cloud or self-hosted edit API (key from $DF_API_KEY)")
    add("--model", default=None,
        help="diffusers: local folder or Hub id (default FLUX.1-Kontext-dev); api: the model name")
    add("--out", default="dataflow-edit-output", help="output folder (images, output JSONL, gallery)")
    add("--steps", type=int, default=None, help="denoising steps (default: the model family's, 28 for Kontext)")
    add("--guidance", type=float, default=None, help="guidance scale (default: the model family's, 3.5 for Kontext)")
    add("--true-cfg-scale", type=float, default=None, help="Qwen-Image-Edit: true classifier-free guidance scale")
    add("--negative-prompt", default=None, help="Qwen-Image-Edit: the negative prompt of true CFG")
    add("--batch-size", type=int, default=4, help="rows per batch")
    add("--height", type=int, default=1024,
        help="diffusers: height x width is the output's area in pixels; its shape follows the input's")
    add("--width", type=int, default=1024, help="diffusers: see --height")
    add("--seed", type=int, default=0,
        help="diffusers: the base seed; each output image's seed comes from it and the row's identity")
    add("--images-per-prompt", type=int, default=1, help="edited images per row")
    add("--candidates", type=int, default=None, help="N edits per row with distinct seeds, for select (best-of-N)")
    add("--lora", action="append", default=None, metavar="PATH_OR_ID[@FILE][:SCALE]",
        help="diffusers: a LoRA fused into the model (a .safetensors file or folder, or a Hub repo and the file in "
             "it); repeat for several")
    add("--recipe", default=None, metavar="FILE_OR_NAME",
        help="diffusers: a recipe file, or a shipped one by name (LoRAs, scheduler, steps, guidance); flags given "
             "win over its values")
    add_acceleration_flags(run)
    add_engine_flags(run)
    add_api_flags(run.add_argument_group("api backend"))
    add("--image-key", default="images", help="the input column holding each row's image path(s)")
    add("--conversation-key", default="conversations",
        help="the input column holding the instruction: a conversation list or a plain string")
    add("--output-key", default="output_image", help="the output column listing each row's edited images")
    add("--save-interval", type=int, default=10, help="rows per durable checkpoint")
    add("--skip-malformed-lines", action="store_true", help="skip invalid JSONL lines with a warning")
    add("--dry-run", action="store_true", help="check the input and the model without generating anything")
    add("--no-gallery", action="store_true", help="do not write the gallery (edited_step1.gallery.html)")
    add("--debug", action="store_true", help="show tracebacks")

    add_score_parser(commands)
    add_filter_parser(commands)
    add_select_parser(commands)
    add_export_parser(commands)
    add_instruct_parser(commands)

    gallery = commands.add_parser("gallery", help="rebuild the gallery of an output file (OUTPUT.gallery.html)")
    gallery.add_argument("output", help="the output JSONL of a run")
    gallery.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def build_serving(args: argparse.Namespace, image_io: ImageIO) -> ImageEditServing:
    """The backend the flags ask for, built with the clean core's names."""
    if args.backend not in DIFFUSERS_BACKENDS and (args.lora or args.recipe):
        raise InputError(f"--lora and --recipe take a diffusers model (--backend flux-kontext), not --backend "
                         f"{args.backend}")
    if args.backend == "classic":
        from dataflow.serving.classic.serving import ClassicEditServing

        check_classic_flags(args)
        return ClassicEditServing(image_io=image_io, batch_size=args.batch_size)
    if args.backend == "api":
        from dataflow.serving.api.flags import api_serving_from_flags

        return api_serving_from_flags(args, image_io)
    from dataflow.serving.diffusers.select import diffusers_serving

    # The model folder's model_index.json names its pipeline: Kontext, Qwen-Image-Edit(-Plus), FLUX.2 (klein).
    return diffusers_serving(
        args.model or DEFAULT_MODEL, image_io=image_io, batch_size=args.batch_size,
        num_inference_steps=args.steps, guidance_scale=args.guidance, true_cfg_scale=args.true_cfg_scale,
        negative_prompt=args.negative_prompt, num_images_per_prompt=args.images_per_prompt, height=args.height,
        width=args.width, seed=args.seed, acceleration=Acceleration.from_flags(args), lora=args.lora,
        recipe=args.recipe,
    )


# Generation flags the classic backend has no use for: its edits are exact, with no model, sampling or size.
CLASSIC_IGNORES = ("seed", "height", "width", "steps", "guidance", "true_cfg_scale", "negative_prompt")


def check_classic_flags(args: argparse.Namespace) -> None:
    """Refuse ``--images-per-prompt`` above 1 (the classic backend would write identical copies of one exact
    edit), and say once which generation flags it ignores, rather than accept them silently."""
    if args.images_per_prompt != 1:
        raise InputError(f"--images-per-prompt {args.images_per_prompt}: the classic backend's edits are exact, "
                         "so every image of a row would be the same; leave it at 1")
    defaults = build_parser().parse_args(["run", args.input])
    given = [name for name in CLASSIC_IGNORES if getattr(args, name) != getattr(defaults, name)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        print(f"note: the classic backend ignores {flags}: its edits are exact and deterministic", file=sys.stderr)


def command_run(args: argparse.Namespace) -> int:
    storage = FileStorage(args.input, cache_path=args.out, file_name_prefix=OUTPUT_PREFIX,
                          skip_malformed_lines=args.skip_malformed_lines)
    RowStream(args.input)  # a missing or unsupported input file is said now, before any model loads
    serving = build_serving(args, ImageIO(save_path=args.out))  # checks the options; loads nothing yet
    ensure_writable_folder(args.out, "output folder")
    engine = engine_from_flags(args, serving, uses_gpu=args.backend in DIFFUSERS_BACKENDS)
    generator = PromptedImageEditGenerator(serving, save_interval=args.save_interval, engine=engine,
                                           candidates=args.candidates)
    keys = dict(input_image_key=args.image_key, input_conversation_key=args.conversation_key,
                output_image_key=args.output_key)
    if args.dry_run:
        return dry_run(storage, serving, generator, keys)
    with output_lock(args.out):  # a run refused for a busy folder leaves the running one's run.json alone
        write_manifest(args, serving)
        summary = generator.run(storage.step(), **keys)
    print(f"done: {summary.generated} edited, {summary.reused} skipped (done earlier), {summary.failed} failed, "
          f"{summary.seconds:.1f} s", file=sys.stderr)
    if summary.warnings:
        print(f"{summary.warnings} image decoder warnings (shown with --debug)", file=sys.stderr)
    if summary.describe_usage():
        print(f"{args.backend}: {summary.describe_usage()}", file=sys.stderr)
    if not args.no_gallery:
        print("writing the gallery ...", file=sys.stderr)
        try:
            print(f"gallery: {build_gallery_from_manifest(summary.output_path)}", file=sys.stderr)
        except OSError as exc:  # a full disk, say: the step file is whole, only the page is missing
            print(f"error: only the gallery failed ({exc}); the step file {summary.output_path} is complete. "
                  f"Rebuild the gallery with: dataflow-edit gallery {summary.output_path}", file=sys.stderr)
            print(summary.output_path)
            return EXIT_ROWS_FAILED
    print(summary.output_path)
    return summary.exit_code


def dry_run(storage: FileStorage, serving: ImageEditServing, generator: PromptedImageEditGenerator,
            keys: dict) -> int:
    """Report every problem by line and the model's readiness; generate nothing."""
    from dataflow.engines.validate import validate_job

    note = serving.check_model()
    job = generator.build_job(storage.step(), **keys)
    total, problems = validate_job(job)
    for problem in problems:
        print(f"{problem.where(storage.first_entry_file_name)}: {problem.message}")
    if note:
        print(f"note: {note}", file=sys.stderr)
    print(f"dry run: {total} rows, {total - len(problems)} ready, {len(problems)} with problems", file=sys.stderr)
    return EXIT_OK if not problems else EXIT_ROWS_FAILED


def write_manifest(args: argparse.Namespace, serving: ImageEditServing) -> None:
    """Where the run's inputs live, so the gallery can be rebuilt later from the output folder alone, and the model
    that edits them: its id, revision and licence (servings with a ``model_info``)."""
    manifest = {
        "input": os.path.abspath(args.input),
        "cwd": os.getcwd(),
        "backend": args.backend,
        "image_key": args.image_key,
        "conversation_key": args.conversation_key,
        "output_key": args.output_key,
    }
    if hasattr(serving, "model_info"):
        manifest["model"] = serving.model_info()
    write_manifest_file(args.out, manifest)


def command_gallery(args: argparse.Namespace) -> int:
    if not os.path.isfile(args.output):
        raise InputError(f"output file not found: {args.output}")
    print(build_gallery_from_manifest(args.output))
    return EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    get_logger().setLevel(logging.DEBUG if args.debug else logging.INFO)
    command = {"run": command_run, "score": command_score, "filter": command_filter, "select": command_select,
               "gallery": command_gallery, "export": command_export, "instruct": command_instruct}[args.command]
    return run_main(lambda: command(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
