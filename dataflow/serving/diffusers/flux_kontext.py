"""FLUX.1 Kontext [dev]: ``FluxKontextPipeline``, one reference image, rows of a bucket batched in one call.

diffusers tiles images and prompts wrongly when ``num_images_per_prompt > 1`` is combined with several images, so
both are expanded here per output image and the pipeline gets ``num_images_per_prompt=1``. The reference is the
preferred Kontext resolution nearest the input's aspect ratio, scaled to the output area (``resolution``).
"""

from __future__ import annotations

from typing import Any, Sequence

from dataflow.serving.diffusers.family import Defaults, Family, Row
from dataflow.serving.diffusers.resolution import output_size, reference_size


class FluxKontextFamily(Family):
    name = "FLUX-Kontext"
    display_name = "FLUX.1 Kontext"
    class_names = ("FluxKontextPipeline",)
    fuse_qkv = True
    flux_rewrites = True
    fp8_blocks = ("transformer_blocks", "single_transformer_blocks")
    needs_cache_context = True  # the Kontext pipeline opens no cache context around its transformer calls
    lora_family = "FLUX.1"

    max_input_images = 1
    defaults = Defaults(num_inference_steps=28, guidance_scale=3.5)

    def bucket_key(self, width: int, height: int, area: int, multiple: int) -> tuple:
        """(reference width, reference height, output width, output height)."""
        from diffusers.pipelines.flux.pipeline_flux_kontext import (
            PREFERRED_KONTEXT_RESOLUTIONS,
        )

        ref = reference_size(width, height, PREFERRED_KONTEXT_RESOLUTIONS, area, multiple)
        return ref + output_size(width, height, area, multiple)

    def references(self, images: Sequence, key: tuple) -> list:
        from PIL import Image

        size = key[:2]
        return [image if image.size == size else image.resize(size, Image.LANCZOS) for image in images]

    def encode(self, pipe: Any, prompt: str, references: list, params: dict) -> tuple:
        embeds, pooled, _ = pipe.encode_prompt(
            prompt=[prompt], prompt_2=None, device=pipe._execution_device, num_images_per_prompt=1,
            max_sequence_length=params["max_sequence_length"],
        )
        return embeds, pooled

    def call(self, pipe: Any, rows: Sequence[Row], key: tuple, params: dict) -> list:
        import torch

        _, _, out_w, out_h = key
        images, embeds, pooled, generators = [], [], [], []
        for row in rows:
            for generator in row.generators:
                images.append(row.references[0])
                embeds.append(row.embeddings[0])
                pooled.append(row.embeddings[1])
                generators.append(generator)
        output = pipe(
            image=images,
            prompt_embeds=torch.cat(embeds),
            pooled_prompt_embeds=torch.cat(pooled),
            height=out_h,
            width=out_w,
            max_area=out_h * out_w,
            _auto_resize=False,
            num_inference_steps=params["num_inference_steps"],
            sigmas=params.get("sigmas"),  # a recipe's schedule (None: the scheduler's own)
            guidance_scale=params["guidance_scale"],
            num_images_per_prompt=1,
            generator=generators,
            max_sequence_length=params["max_sequence_length"],
        )
        return list(output.images)
