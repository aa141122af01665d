"""The image editing pipeline (GPU), as in DataFlow-MM's documentation.

    python dataflow/statics/pipelines/gpu_pipelines/image_editing_pipeline.py --first_entry_file_name in.jsonl

Every storage, serving and operator parameter is a flag of the same name. Output goes to
``./cache_local/image_edit_local`` (relative to where it runs); the last line printed is the output file's path.
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
from dataflow.engines.select import add_engine_flags, engine_from_flags
from dataflow.io import ImageIO
from dataflow.operators.core_vision import PromptedImageEditGenerator
from dataflow.serving.diffusers.speed.options import Acceleration, add_acceleration_flags
from dataflow.serving.local_image_gen_serving import LocalImageGenServing
from dataflow.statics.pipelines.script_flags import (
    RENAMED_FLAGS, add_operator_flags, add_storage_flags, image_folder, operator_keys, storage_from_flags,
)

# The CLI flags of LocalImageGenServing's parameters, as this script names them.
SERVING_FLAGS = {"--model": "--hf_model_name_or_path", "--steps": "--diffuser_num_inference_steps",
                 "--guidance": "--diffuser_guidance_scale", "--images-per-prompt": "--diffuser_num_images_per_prompt",
                 "--height": "--diffuser_image_height", "--width": "--diffuser_image_width"}


class ImageEditingPipeline:
    """FileStorage -> PromptedImageEditGenerator(LocalImageGenServing) -> step file, built from ``args``."""

    def __init__(self, args: argparse.Namespace):
        self.storage = storage_from_flags(args)
        self.serving = LocalImageGenServing(
            image_io=ImageIO(save_path=image_folder(args)),
            hf_model_name_or_path=args.hf_model_name_or_path,
            hf_cache_dir=args.hf_cache_dir,
            hf_local_dir=args.hf_local_dir,
            Image_gen_task=args.Image_gen_task,
            batch_size=args.batch_size,
            diffuser_model_name=args.diffuser_model_name,
            diffuser_image_height=args.diffuser_image_height,
            diffuser_image_width=args.diffuser_image_width,
            diffuser_num_inference_steps=args.diffuser_num_inference_steps,
            diffuser_guidance_scale=args.diffuser_guidance_scale,
            negative_prompt=args.negative_prompt,
            true_cfg_scale=args.true_cfg_scale,
            diffuser_num_images_per_prompt=args.diffuser_num_images_per_prompt,
            seed=args.seed,
            device=args.device,
            acceleration=Acceleration.from_flags(args),
            lora=args.lora,
            recipe=args.recipe,
        )
        engine = engine_from_flags(args, self.serving)
        self.generator = PromptedImageEditGenerator(image_edit_serving=self.serving, save_interval=args.save_interval,
                                                    engine=engine)
        self.keys = operator_keys(args)

    def forward(self):
        return self.generator.run(storage=self.storage.step(), **self.keys)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Edit every image of a JSONL file by its instruction (FLUX.1 Kontext).")
    add_storage_flags(parser, cache_path="./cache_local/image_edit_local")
    add = parser.add_argument
    add("--hf_model_name_or_path", default="black-forest-labs/FLUX.1-Kontext-dev", help="local folder or Hub id")
    add("--hf_cache_dir", default="./cache_local", help="the Hub cache for downloads")
    add("--hf_local_dir", default="./ckpt/models/", help="a Hub download goes to this folder/<repo name>")
    add("--Image_gen_task", default="imageedit", help="imageedit (the only task)")
    add("--diffuser_model_name", default="FLUX-Kontext",
        help="FLUX-Kontext, Qwen-Image-Edit or FLUX.2; the model folder must hold a pipeline of this family")
    add("--batch_size", type=int, default=4, help="rows per batch")
    add("--diffuser_num_inference_steps", type=int, default=None, help="default: the family's (28 for Kontext)")
    add("--diffuser_guidance_scale", type=float, default=None, help="default: the family's (3.5 for Kontext)")
    add("--negative_prompt", default=None, help="Qwen-Image-Edit: the negative prompt of true CFG")
    add("--true_cfg_scale", type=float, default=None, help="Qwen-Image-Edit: true CFG scale")
    add("--diffuser_num_images_per_prompt", type=int, default=1, help="edited images per row")
    add("--diffuser_image_height", type=int, default=1024,
        help="height x width is the output's area in pixels; its shape follows the input's")
    add("--diffuser_image_width", type=int, default=1024, help="see --diffuser_image_height")
    add("--seed", type=int, default=0,
        help="the base seed; each output image's seed comes from it and the row's identity")
    add("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    add("--lora", action="append", default=None, metavar="PATH_OR_ID[@FILE][:SCALE]",
        help="a LoRA fused into the model (a .safetensors file or folder, or a Hub repo and the file in it; "
             "downloaded into --hf_local_dir); repeat for several")
    add("--recipe", default=None, metavar="FILE_OR_NAME",
        help="a recipe file, or a shipped one by name (LoRAs, scheduler, steps, guidance); flags given win")
    add_acceleration_flags(parser, separator="_")
    add_engine_flags(parser, separator="_")
    add_operator_flags(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def body() -> int:
        summary = ImageEditingPipeline(args).forward()
        print(summary.describe(), file=sys.stderr)
        print(summary.output_path)
        return summary.exit_code

    return run_main(body, debug=args.debug, respell=flag_respeller(parser, {**RENAMED_FLAGS, **SERVING_FLAGS}))


if __name__ == "__main__":
    sys.exit(main())
