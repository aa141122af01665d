"""LongCat-Image-Edit and LongCat-Image-Edit-Turbo: ``LongCatImageEditPipeline`` (one input image, a Qwen2.5-VL
encoder that sees it, classifier-free guidance against an empty prompt when ``guidance_scale > 1``).

Both models ship the same pipeline class and the same ``model_index.json``; the Turbo (distilled: 8 steps, no CFG)
is told apart by its name: a folder or Hub id whose last part contains "turbo" (any case), as
``meituan-longcat/LongCat-Image-Edit-Turbo`` and the folder a download of it lands in. Steps and guidance given
by the caller are used either way.

The pipeline takes one prompt per call, so a row is one call and ``num_images_per_prompt`` makes its images. What is
changed from plain diffusers:

1. the output keeps the image's aspect ratio at the requested area (diffusers: always about 1 MP, sides rounded up
   to multiples of 16). diffusers reads that size from a module function, which is replaced for one call under a
   lock; the reference is sized to the output, as diffusers does, and the VLM sees it at half that size, as diffusers;
2. the Qwen2.5-VL encoder runs once per distinct (instruction, image), and once per image for the empty negative
   prompt. diffusers 0.42.1 cannot take ``prompt_embeds`` without ``prompt`` (``encode_prompt`` calls
   ``len(None)``); for the call, the pipeline's ``encode_prompt`` is given the batch size the embeddings carry.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Sequence

from dataflow.serving.diffusers.family import Defaults, Family, Row
from dataflow.serving.diffusers.resolution import output_size

_SIZING_LOCK = threading.Lock()


class LongCatImageEditFamily(Family):
    name = "LongCat-Image-Edit"
    display_name = "LongCat-Image-Edit"
    class_names = ("LongCatImageEditPipeline",)
    rows_per_call = 1
    encoder_sees_images = True
    fuse_qkv = True  # its attention reads fused projections (``to_qkv``) when they exist
    fp8_blocks = ("transformer_blocks", "single_transformer_blocks")
    first_block_cache = False  # diffusers 0.42.1 has no block metadata for LongCat blocks: the hook cannot run

    max_input_images = 1

    @property
    def turbo(self) -> bool:
        """LongCat-Image-Edit-Turbo: the model's name (folder or Hub id, last part) contains "turbo"."""
        name = os.path.basename(os.path.normpath(os.path.expanduser(self.source or "")))
        return "turbo" in name.lower()

    @property
    def defaults(self) -> Defaults:
        # diffusers and the LongCat-Image-Edit card: 50 steps, guidance 4.5; the Turbo card: 8 steps, guidance 1.
        return Defaults(num_inference_steps=8, guidance_scale=1.0) if self.turbo else \
            Defaults(num_inference_steps=50, guidance_scale=4.5)

    def describe(self) -> str:
        return f"LongCat-Image-Edit-Turbo ({self.variant})" if self.turbo else super().describe()

    def bucket_key(self, width: int, height: int, area: int, multiple: int) -> tuple:
        """(reference width, reference height, output width, output height): the reference is the output size."""
        size = output_size(width, height, area, multiple)
        return size + size

    def references(self, images: Sequence, key: tuple) -> list:
        from PIL import Image

        size = key[:2]  # the pipeline resizes with Lanczos too; at this size its resize is a copy
        return [image if image.size == size else image.resize(size, Image.LANCZOS) for image in images]

    def negative_prompt(self, params: dict):
        return "" if (params["guidance_scale"] or 0) > 1 else None

    def encode(self, pipe: Any, prompt: str, references: list, params: dict) -> Any:
        reference = references[0]
        seen = pipe.image_processor.resize(reference, reference.height // 2, reference.width // 2)
        embeds, _ = pipe.encode_prompt(prompt=[prompt], image=seen, num_images_per_prompt=1)
        return embeds

    def call(self, pipe: Any, rows: Sequence[Row], key: tuple, params: dict) -> list:
        (row,) = rows
        _, _, out_w, out_h = key
        with _output_size(out_w, out_h), _embeddings_without_prompt(pipe):
            output = pipe(
                image=row.references[0],
                prompt_embeds=row.embeddings,
                negative_prompt_embeds=row.negative,
                guidance_scale=params["guidance_scale"],
                num_inference_steps=params["num_inference_steps"],
                num_images_per_prompt=len(row.generators),
                generator=row.generators,
            )
        return list(output.images)


@contextlib.contextmanager
def _output_size(width: int, height: int):
    """Make the pipeline's size for this call (``calculate_dimensions``, 1 MP in diffusers) ``width`` x ``height``."""
    from diffusers.pipelines.longcat_image import pipeline_longcat_image_edit as module

    with _SIZING_LOCK:
        original = module.calculate_dimensions
        module.calculate_dimensions = lambda target_area, ratio: (width, height)
        try:
            yield
        finally:
            module.calculate_dimensions = original


@contextlib.contextmanager
def _embeddings_without_prompt(pipe: Any):
    """Let ``pipe.encode_prompt`` take ``prompt_embeds`` alone (it computes ``len(prompt)`` first)."""
    original = pipe.encode_prompt

    def encode_prompt(prompt=None, image=None, num_images_per_prompt=1, prompt_embeds=None):
        if prompt is None and prompt_embeds is not None:
            prompt = [""] * prompt_embeds.shape[0]  # only its length is read when embeddings are given
        return original(prompt=prompt, image=image, num_images_per_prompt=num_images_per_prompt,
                        prompt_embeds=prompt_embeds)

    pipe.encode_prompt = encode_prompt
    try:
        yield
    finally:
        del pipe.encode_prompt  # back to the class's method
