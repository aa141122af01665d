"""``dataflow-edit instruct``: write edit instructions for source images, the step before ``run``.

    dataflow-edit instruct IMAGES_OR_JSONL --out DIR [--backend templates|api|local] [--types T1,T2] [--per-image N]
        [--quota TYPE=N ...] [--rewrite] [--model M] [--api-url URL] [--taxonomy FILE]

The input is a folder of images (listed recursively), or anything ``run`` reads (a JSONL of rows with ``images``,
parquet, ``save_to_disk``, WebDataset). It writes ``DIR/instructions.jsonl``, rows in ``run``'s input format, and
``DIR/instructions_rejected.jsonl`` (declined types, near-duplicates, failed images). A summary goes to stderr; the
last line on stdout is the instructions file. The API key comes from ``DF_API_KEY`` only, never a flag.
"""

from __future__ import annotations

import argparse
import os
import sys

from dataflow.core.errors import InputError
from dataflow.serving.api.flags import URL_VARIABLE, json_object
from dataflow.utils.storage import FileStorage

BACKENDS = ("templates", "api", "local")
KEY_VARIABLE = "DF_API_KEY"
OUTPUT_NAME = "instructions"


def add_instruct_parser(commands) -> None:
    instruct = commands.add_parser("instruct", help="write edit instructions for a folder (or dataset) of images")
    add = instruct.add_argument
    add("input", help="a folder of images (searched recursively), or a .jsonl/.json/.csv/.parquet of rows with images, "
                      "parquet shards, a datasets.save_to_disk folder, WebDataset .tar shards")
    add("--out", required=True, help="output folder: instructions.jsonl, instructions_rejected.jsonl, progress")
    add("--backend", choices=BACKENDS, default="templates",
        help="templates: offline, global edits the classic backend can do; api: an OpenAI-compatible chat API "
             "(key from $DF_API_KEY); local: a transformers VLM")
    add("--model", default=None, help="api: the model name the server knows; local: a VLM folder or Hub id "
                                      "(default Qwen/Qwen2.5-VL-7B-Instruct)")
    add("--api-url", default=None, help=f"api: the API root (default ${URL_VARIABLE}); /v1 is added when absent")
    add("--types", default=None, help="comma-separated edit types (default: every type the backend can write)")
    add("--per-image", type=int, default=1, help="instructions per image, each of another type")
    add("--quota", action="append", default=[], metavar="TYPE=N",
        help="instructions of TYPE over the whole run (repeatable, or comma-separated); other types share the rest")
    add("--rewrite", action="store_true",
        help="rewrite the input rows' instructions instead (api or local), keeping each original beside it")
    add("--taxonomy", default=None, help="an edited copy of the edit types file (default: the shipped edit_types.json)")
    add("--seed", type=int, default=0, help="which images get which types (the same seed plans the same)")
    add("--image-key", default="images")
    add("--conversation-key", default="conversations", help="--rewrite: the field of the instructions to rewrite")
    add("--max-concurrency", type=int, default=8, help="api: requests in flight at once")
    add("--max-retries", type=int, default=5, help="api: retries after 429, 5xx, timeouts and lost connections")
    add("--timeout", type=float, default=300, help="api: seconds to wait for an answer")
    add("--temperature", type=float, default=0.7, help="api: sampling temperature")
    add("--extra-body", type=json_object, default=None, help="api: JSON object of extra request fields")
    add("--batch-size", type=int, default=4, help="local: images per generate call")
    add("--max-new-tokens", type=int, default=512, help="local: the longest answer")
    add("--save-interval", type=int, default=10, help="images per durable checkpoint")
    add("--debug", action="store_true", help="show tracebacks")


class InstructionStorage(FileStorage):
    """A storage whose first step writes ``{cache_path}/instructions.jsonl`` (the name ``run`` is then given)."""

    def file_path(self, step: int) -> str:
        if step == 1:
            return os.path.join(self.cache_path, f"{OUTPUT_NAME}.jsonl")
        return super().file_path(step)


def build_writer(args: argparse.Namespace):
    """The instruction writer the flags ask for."""
    from dataflow.operators.core_vision.generate.instructions import APIWriter, LocalWriter, TemplateWriter

    if args.backend == "templates":
        if args.model:
            raise InputError("--model is for --backend api or local; the templates backend uses no model")
        return TemplateWriter()
    if args.backend == "api":
        url = args.api_url or os.environ.get(URL_VARIABLE)
        if not url:
            raise InputError(f"--backend api needs --api-url (or ${URL_VARIABLE})")
        if not args.model:
            raise InputError("--backend api needs --model: the name of the chat model the server serves")
        return APIWriter(url, args.model, os.environ.get(KEY_VARIABLE) or None, max_concurrency=args.max_concurrency,
                         max_retries=args.max_retries, timeout=args.timeout, temperature=args.temperature,
                         extra_body=args.extra_body)
    options = {"model": args.model} if args.model else {}
    return LocalWriter(**options, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)


def command_instruct(args: argparse.Namespace) -> int:
    from dataflow.operators.core_vision import PromptedImageEditInstructionGenerator
    from dataflow.operators.core_vision.generate.instructions.plan import parse_quotas

    if not os.path.exists(args.input) and "{" not in args.input:
        raise InputError(f"input not found: {args.input}")
    types = [name.strip() for name in args.types.split(",") if name.strip()] if args.types else None
    generator = PromptedImageEditInstructionGenerator(
        build_writer(args), types=types, per_image=args.per_image, quotas=parse_quotas(args.quota),
        rewrite=args.rewrite, taxonomy=args.taxonomy, seed=args.seed, save_interval=args.save_interval)
    storage = InstructionStorage(args.input, cache_path=args.out, file_name_prefix=OUTPUT_NAME)
    summary = generator.run(storage.step(), input_image_key=args.image_key,
                            input_conversation_key=args.conversation_key, paths_relative_to=args.out)
    print(f"done: {summary.describe()}", file=sys.stderr)
    if summary.usage:
        print(f"{args.backend}: " + ", ".join(f"{k}: {v}" for k, v in summary.usage.items()), file=sys.stderr)
    print(f"rejected: {summary.rejected_path}", file=sys.stderr)
    print(summary.output_path)
    return summary.exit_code
