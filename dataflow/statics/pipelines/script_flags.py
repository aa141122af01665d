"""The flags both seed scripts share (the storage's, the operator's), spelled as DataFlow-MM's parameters.

Each script adds its serving's own flags between ``add_storage_flags`` and ``add_operator_flags``, and builds its
``FileStorage`` with ``storage_from_flags``.
"""

from __future__ import annotations

import argparse
import os

from dataflow.utils.storage import FileStorage

EXAMPLE_FILE = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "example", "image_edit",
                                             "prompts.jsonl"))


# The CLI flags whose options the seed scripts name otherwise (messages name options by their CLI flags); the
# others differ only by "_" for "-" (see ``dataflow.core.flags.flag_respeller``).
RENAMED_FLAGS = {"--image-key": "--input_image_key", "--conversation-key": "--input_conversation_key",
                 "--output-key": "--output_image_key", "--out": "--cache_path"}


def add_storage_flags(parser: argparse.ArgumentParser, cache_path: str) -> None:
    """``FileStorage``'s parameters and the image folder; step files go to ``cache_path`` by default."""
    add = parser.add_argument
    add("--first_entry_file_name", default=EXAMPLE_FILE, help="input jsonl/json/csv/parquet")
    add("--cache_path", default=cache_path, help="folder of step files (and images)")
    add("--file_name_prefix", default="dataflow_cache_step", help="step files are named PREFIX_stepN.TYPE")
    add("--cache_type", default="jsonl", choices=["jsonl", "json", "csv", "parquet"], help="the step files' format")
    add("--skip_malformed_lines", action="store_true", help="skip invalid JSONL lines with a warning")
    add("--image_save_path", default=None, help="folder of edited images (default: --cache_path)")


def add_operator_flags(parser: argparse.ArgumentParser) -> None:
    """``PromptedImageEditGenerator``'s parameters, its row keys, and ``--debug``."""
    add = parser.add_argument
    add("--save_interval", type=int, default=10, help="rows per durable checkpoint")
    add("--input_image_key", default="images", help="the input column holding each row's image path(s)")
    add("--input_conversation_key", default="conversations",
        help="the input column holding the instruction: a conversation list or a plain string")
    add("--output_image_key", default="output_image", help="the output column listing each row's edited images")
    add("--debug", action="store_true", help="show tracebacks")


def storage_from_flags(args: argparse.Namespace) -> FileStorage:
    return FileStorage(
        first_entry_file_name=args.first_entry_file_name,
        cache_path=args.cache_path,
        file_name_prefix=args.file_name_prefix,
        cache_type=args.cache_type,
        skip_malformed_lines=args.skip_malformed_lines,
    )


def image_folder(args: argparse.Namespace) -> str:
    """Where the edited images go: ``--image_save_path``, else the step files' folder."""
    return args.image_save_path or args.cache_path


def operator_keys(args: argparse.Namespace) -> dict:
    """The row keys, as ``PromptedImageEditGenerator.run`` takes them."""
    return dict(input_image_key=args.input_image_key, input_conversation_key=args.input_conversation_key,
                output_image_key=args.output_image_key)
