"""The image editing pipeline (API), as in DataFlow-MM's documentation.

    DF_API_KEY=... python dataflow/statics/pipelines/api_pipelines/image_editing_api_pipeline.py \
        --first_entry_file_name in.jsonl --api_format gemini --model_name gemini-2.5-flash-image

The key is read from ``DF_API_KEY`` only; the API root from ``--api_url``, else ``DF_BASE_URL``, else the
format's official URL. Every storage, serving and operator parameter is a flag of the same name. Output goes to
``./cache_local/image_edit_api`` (relative to where it runs); the last line printed is the output file's path.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

if __package__ in (None, ""):  # run as a script from a source checkout: make the package importable
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 4)))

from dataflow.cli.exits import run_main
from dataflow.cli.parser import ArgumentParser
from dataflow.core.flags import flag_respeller
from dataflow.engines.summary import describe_usage
from dataflow.io import ImageIO
from dataflow.operators.core_vision import PromptedImageEditGenerator
from dataflow.serving.api.flags import URL_VARIABLE, add_api_flags, api_options
from dataflow.serving.api_image_gen_serving import APIImageGenServing
from dataflow.statics.pipelines.script_flags import (
    RENAMED_FLAGS, add_operator_flags, add_storage_flags, image_folder, operator_keys, storage_from_flags,
)

# The CLI flags of APIImageGenServing's parameters, as this script names them.
SERVING_FLAGS = {"--model": "--model_name", "--images-per-prompt": "--num_images_per_prompt"}



class ImageEditingAPIPipeline:
    """FileStorage -> PromptedImageEditGenerator(APIImageGenServing) -> step file, built from ``args``."""

    def __init__(self, args: argparse.Namespace):
        self.storage = storage_from_flags(args)
        self.serving = APIImageGenServing(
            api_url=args.api_url or os.environ.get(URL_VARIABLE) or None,
            image_io=ImageIO(save_path=image_folder(args)),
            Image_gen_task=args.Image_gen_task,
            batch_size=args.batch_size,
            api_format=args.api_format,
            model_name=args.model_name,
            num_images_per_prompt=args.num_images_per_prompt,
            **api_options(args),
        )
        self.generator = PromptedImageEditGenerator(image_edit_serving=self.serving, save_interval=args.save_interval)
        self.keys = operator_keys(args)

    def forward(self):
        try:
            return self.generator.run(storage=self.storage.step(), **self.keys)
        finally:
            self.serving.close()


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Edit every image of a JSONL file by its instruction, through an "
                                                 "image edit API (OpenAI-compatible or Gemini).")
    add_storage_flags(parser, cache_path="./cache_local/image_edit_api")
    add_api_flags(parser, separator="_")
    add = parser.add_argument
    add("--model_name", default=None,
        help="default: gpt-image-2.5-sunburst (openai) or gemini-2.5-flash-image (gemini)")
    add("--Image_gen_task", default="imageedit", help="imageedit (the only task)")
    add("--batch_size", type=int, default=4, help="accepted for compatibility; each row is its own request")
    add("--num_images_per_prompt", type=int, default=1, help="edited images per row")
    add_operator_flags(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def body() -> int:
        pipeline = ImageEditingAPIPipeline(args)
        try:
            summary = pipeline.forward()
        finally:
            print("api: " + describe_usage(pipeline.serving.usage()), file=sys.stderr)  # paid for, even if stopped
        print(summary.describe(), file=sys.stderr)
        print(summary.output_path)
        return summary.exit_code

    return run_main(body, debug=args.debug, respell=flag_respeller(parser, {**RENAMED_FLAGS, **SERVING_FLAGS}))


if __name__ == "__main__":
    sys.exit(main())
