"""Qwen-Image-2.1: ``QwenImage21Pipeline``, one model for text-to-image and editing (through its ``image``
argument, up to 10 references), with a Qwen3-VL encoder that reads the instruction and the images together.

The pipeline shares a call's references across its prompts, so a row is one call and ``num_images_per_prompt`` makes
its images. What is changed from plain diffusers:

1. the output keeps the **first** image's aspect ratio at the requested area (diffusers: the last image's, at
   ``output_resolution`` squared, 1024 x 1024); the references are sized at the same area (``output_resolution`` is
   the area's side), each at its own aspect ratio, as diffusers does at its default;
2. the encoder runs once per distinct (instruction, images). diffusers 0.42.1 refuses ``prompt_embeds`` for an
   editing call unless they come with their ``image_pad_mask``, which ``__call__`` does not take; for the call, the
   pipeline's ``encode_prompt`` is handed the masks of the embeddings it is given;
3. the model is sampled without guidance (``true_cfg_scale`` 1.0, as its card and diffusers); ``true_cfg_scale > 1``
   runs classifier-free guidance against ``negative_prompt`` (" " unless given). It takes no ``guidance_scale``;
4. steps: a folder whose ``model_index.json`` sets ``sample_sigmas`` (the author's schedule) takes that many steps
   by default; steps given otherwise get diffusers' own linear schedule of that length, so they are always obeyed.

Its VAE reconstructs RGBA: the edited images have an alpha channel, as diffusers returns them.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Optional, Sequence

from dataflow.serving.diffusers.family import Defaults, Family, Row
from dataflow.serving.diffusers.resolution import output_size

VAE_SCALE = 16  # QwenImage21Pipeline.vae_scale_factor, fixed in the pipeline
DEFAULT_STEPS = 40


class QwenImage21Family(Family):
    name = "Qwen-Image-2.1"
    display_name = "Qwen-Image-2.1"
    class_names = ("QwenImage21Pipeline",)
    rows_per_call = 1
    encoder_sees_images = True
    takes_negative_prompt = True
    fp8_blocks = ("transformer_blocks",)  # single-stream blocks; the shared modulation lies outside them
    first_block_cache = False  # diffusers 0.42.1 has no block metadata for Qwen-Image-2.1 blocks

    max_input_images = 10  # diffusers and the model card: up to 10 condition images

    @property
    def sample_sigmas(self) -> Optional[list]:
        sigmas = self.index.get("sample_sigmas")
        return sigmas if isinstance(sigmas, list) and sigmas else None

    @property
    def defaults(self) -> Defaults:
        steps = len(self.sample_sigmas) if self.sample_sigmas else DEFAULT_STEPS
        return Defaults(num_inference_steps=steps, true_cfg_scale=1.0, negative_prompt=" ")

    def multiple_of(self, folder: str) -> int:
        return 2 * VAE_SCALE

    def resolution(self, area: int) -> int:
        """``output_resolution``: the side of a square of the output area."""
        return max(1, round(math.sqrt(area)))

    def reference_size(self, width: int, height: int, area: int) -> tuple[int, int]:
        """The size diffusers gives a condition image at ``output_resolution`` = the area's side."""
        from diffusers.pipelines.qwenimage21.pipeline_qwenimage21 import (
            calculate_dimensions,
        )

        side = self.resolution(area)
        w, h, _ = calculate_dimensions(side * side, width / height)
        return w, h

    def bucket_key(self, width: int, height: int, area: int, multiple: int) -> tuple:
        return self.reference_size(width, height, area) + output_size(width, height, area, multiple)

    def negative_prompt(self, params: dict):
        return params["negative_prompt"] if params["true_cfg_scale"] > 1 else None

    def _seen(self, pipe: Any, references: list, area: int) -> list:
        """The condition images as the pipeline resizes them (RGBA, at their reference size)."""
        seen = []
        for image in references:
            w, h = self.reference_size(image.width, image.height, area)
            image = image if image.mode == "RGBA" else image.convert("RGBA")
            seen.append(pipe.image_processor.resize(image, width=w, height=h))
        return seen

    def encode(self, pipe: Any, prompt: str, references: list, params: dict) -> tuple:
        """(embeddings, their mask or None, the image-token mask), for one prompt with the row's images."""
        return pipe.encode_prompt(prompt=[prompt], image=self._seen(pipe, references, params["area"]),
                                  device=pipe._execution_device, num_images_per_prompt=1)

    def sigmas(self, steps: int) -> Optional[list]:
        """None where the folder's own schedule applies; else diffusers' default schedule of ``steps`` steps."""
        if self.sample_sigmas and steps == len(self.sample_sigmas):
            return None
        import numpy as np

        return list(np.linspace(1.0, 1 / steps, steps)) if self.sample_sigmas else None

    def call(self, pipe: Any, rows: Sequence[Row], key: tuple, params: dict) -> list:
        (row,) = rows
        _, _, out_w, out_h = key
        cfg = params["true_cfg_scale"] > 1 and row.negative is not None
        masks = {id(row.embeddings[0]): row.embeddings[2]}
        if cfg:
            masks[id(row.negative[0])] = row.negative[2]
        with _image_pad_masks(pipe, masks):
            output = pipe(
                image=row.references,
                prompt_embeds=row.embeddings[0],
                prompt_embeds_mask=row.embeddings[1],
                negative_prompt_embeds=row.negative[0] if cfg else None,
                negative_prompt_embeds_mask=row.negative[1] if cfg else None,
                true_cfg_scale=params["true_cfg_scale"],
                height=out_h,
                width=out_w,
                num_inference_steps=params["num_inference_steps"],
                sigmas=self.sigmas(params["num_inference_steps"]),
                num_images_per_prompt=len(row.generators),
                generator=row.generators,
                output_resolution=self.resolution(params["area"]),
            )
        return list(output.images)


@contextlib.contextmanager
def _image_pad_masks(pipe: Any, masks: dict):
    """Hand ``pipe.encode_prompt`` the image-token mask of each embeddings tensor it is given (by identity)."""
    original = pipe.encode_prompt

    def encode_prompt(*args, prompt_embeds=None, image_pad_mask=None, **kwargs):
        if prompt_embeds is not None and image_pad_mask is None:
            image_pad_mask = masks.get(id(prompt_embeds))
        return original(*args, prompt_embeds=prompt_embeds, image_pad_mask=image_pad_mask, **kwargs)

    pipe.encode_prompt = encode_prompt
    try:
        yield
    finally:
        del pipe.encode_prompt
