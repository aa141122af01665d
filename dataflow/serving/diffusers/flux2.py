"""FLUX.2: ``Flux2Pipeline`` ([dev], Mistral3 encoder), ``Flux2KleinPipeline`` and ``Flux2KleinKVPipeline`` ([klein]
4B / 9B, Qwen3 encoder; step-distilled unless the folder says ``is_distilled: false``, the "base" models).

Every prompt of a FLUX.2 call shares the call's reference images, so a row is one call, and
``num_images_per_prompt`` makes its images. References go in the row's order, each at its own size as diffusers
keeps them (up to 1 MP, cropped to the latent grid); inputs with a side under 64 px are enlarged to 64 px, which
diffusers requires. The output keeps the first image's aspect ratio at the requested area (diffusers: the first
image's size). The text encoder sees no images, so its output is cached per instruction.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

from dataflow.serving.diffusers.family import Defaults, Family, Row
from dataflow.serving.diffusers.resolution import output_size

MIN_SIDE = 64  # Flux2ImageProcessor.check_image_input
MAX_ASPECT = 8
MAX_REFERENCE_AREA = 1024 * 1024


class Flux2Family(Family):
    name = "FLUX.2"
    display_name = "FLUX.2"
    class_names = ("Flux2Pipeline", "Flux2KleinPipeline", "Flux2KleinKVPipeline")
    rows_per_call = 1
    fuse_qkv = True
    fp8_blocks = ("transformer_blocks", "single_transformer_blocks")
    first_block_cache = False  # diffusers 0.42.1's hook fails on the FLUX.2 blocks' outputs (TypeError)
    lora_family = "FLUX.2"

    @property
    def klein(self) -> bool:
        return self.variant != "Flux2Pipeline"

    @property
    def distilled(self) -> bool:
        if self.variant == "Flux2KleinPipeline":
            return bool(self.index.get("is_distilled", False))
        return self.variant == "Flux2KleinKVPipeline"

    @property
    def max_input_images(self) -> int:
        # diffusers sets no limit; Black Forest Labs documents up to 10 references for [dev], 4 for [klein].
        return 4 if self.klein else 10

    @property
    def defaults(self) -> Defaults:
        if self.variant == "Flux2KleinKVPipeline":  # no guidance argument at all
            return Defaults(num_inference_steps=4)
        if self.distilled:  # [klein] 4B / 9B: 4 steps; guidance is ignored by diffusers for distilled models
            return Defaults(num_inference_steps=4, guidance_scale=1.0)
        # [dev] (guidance-distilled, embedded guidance) and [klein] base (true CFG against an empty prompt)
        return Defaults(num_inference_steps=50, guidance_scale=4.0)

    def describe(self) -> str:
        kind = "[dev]" if not self.klein else "[klein]" if self.distilled else "[klein] base"
        return f"FLUX.2 {kind} ({self.variant})"

    @property
    def cfg_against_empty_prompt(self) -> bool:
        return self.variant == "Flux2KleinPipeline" and not self.distilled

    def negative_prompt(self, params: dict):
        """[klein] base runs CFG against an empty prompt when guidance_scale > 1; its embeddings are cached."""
        return "" if self.cfg_against_empty_prompt and (params["guidance_scale"] or 0) > 1 else None

    def reference_size(self, width: int, height: int, multiple: int) -> tuple[int, int]:
        """The size diffusers gives a reference of this size (after our enlargement of small inputs)."""
        width, height = _enlarged(width, height)
        if width * height > MAX_REFERENCE_AREA:
            scale = math.sqrt(MAX_REFERENCE_AREA / (width * height))
            width, height = int(width * scale), int(height * scale)
        return width // multiple * multiple, height // multiple * multiple

    def bucket_key(self, width: int, height: int, area: int, multiple: int) -> tuple:
        return self.reference_size(width, height, multiple) + output_size(width, height, area, multiple)

    def row_error(self, images: Sequence) -> Optional[str]:
        for image in images:
            w, h = image.size
            if max(w / h, h / w) > MAX_ASPECT:
                return f"{self.display_name} takes images up to {MAX_ASPECT}:1; this row has one of {w}x{h}"
        return None

    def references(self, images: Sequence, key: tuple) -> list:
        from PIL import Image

        out = []
        for image in images:
            size = _enlarged(*image.size)
            out.append(image if size == image.size else image.resize(size, Image.LANCZOS))
        return out

    def encode(self, pipe: Any, prompt: str, references: list, params: dict) -> Any:
        embeds, _ = pipe.encode_prompt(prompt=[prompt], device=pipe._execution_device, num_images_per_prompt=1,
                                       max_sequence_length=params["max_sequence_length"])
        return embeds

    def call(self, pipe: Any, rows: Sequence[Row], key: tuple, params: dict) -> list:
        (row,) = rows
        _, _, out_w, out_h = key
        options = dict(
            image=row.references,
            prompt_embeds=row.embeddings,
            height=out_h,
            width=out_w,
            num_inference_steps=params["num_inference_steps"],
            sigmas=params.get("sigmas"),  # a recipe's schedule (None: the scheduler's own)
            num_images_per_prompt=len(row.generators),
            generator=row.generators,
            max_sequence_length=params["max_sequence_length"],
        )
        if self.variant != "Flux2KleinKVPipeline":
            options["guidance_scale"] = params["guidance_scale"]
        if row.negative is not None:
            options["negative_prompt_embeds"] = row.negative
        return list(pipe(**options).images)


def _enlarged(width: int, height: int) -> tuple[int, int]:
    if min(width, height) >= MIN_SIDE:
        return width, height
    scale = MIN_SIDE / min(width, height)
    return max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale))
