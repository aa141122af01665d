"""Qwen-Image-Edit: ``QwenImageEditPipeline`` (one input image) and ``QwenImageEditPlusPipeline`` (2509 / 2511,
several input images), with a Qwen2.5-VL encoder that sees the images, and true classifier-free guidance.

Both pipelines take one row per call (Plus refuses more than one prompt; plain Edit shares its one image across the
prompts of a call), so a bucket's rows are edited one after another and ``num_images_per_prompt`` makes a row's
images in one call. What is changed from plain diffusers:

1. the output keeps the **first** image's aspect ratio at the requested area (diffusers: the last image's, ~1 MP);
2. the VAE references are sized at the output area (diffusers: always ~1 MP; the same at the default 1024x1024).
   diffusers reads that area from a module constant (Plus) or a literal (Edit), so it is set for the duration of a
   call, under a lock; the VLM's view of each image (384x384 for Plus) is left as diffusers has it;
3. the Qwen2.5-VL encoder runs once per distinct (instruction, images), and once per (negative prompt, images);
4. the transformer gets no text mask when every prompt of the call has an all-ones mask, which a call of one prompt
   always has: attention then takes the fast unmasked kernels (and FP8 attention, which takes unmasked calls only),
   with the same result up to float rounding. diffusers 0.37 and newer drop such a mask themselves when encoding;
   the versions before pass it on to the transformer. The mask still goes to the pipeline: some diffusers releases
   turn true CFG off when the negative prompt's mask is missing (diffusers issue 13377).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Sequence

from dataflow.serving.diffusers.family import (
    Defaults,
    Family,
    Row,
    read_component_config,
)
from dataflow.serving.diffusers.resolution import output_size

DIFFUSERS_REFERENCE_AREA = 1024 * 1024  # what both pipelines size their VAE references to
_SIZING_LOCK = threading.Lock()


class QwenImageEditFamily(Family):
    name = "Qwen-Image-Edit"
    display_name = "Qwen-Image-Edit"
    class_names = ("QwenImageEditPipeline", "QwenImageEditPlusPipeline")
    rows_per_call = 1
    encoder_sees_images = True
    takes_negative_prompt = True
    default_max_sequence_length = 512
    lora_family = "Qwen-Image"

    @property
    def plus(self) -> bool:
        return self.variant == "QwenImageEditPlusPipeline"

    @property
    def max_input_images(self) -> int:
        # Plus concatenates any number of references; the 2509/2511 model cards give 1-3 as the supported range.
        return 3 if self.plus else 1

    @property
    def defaults(self) -> Defaults:
        # Model cards: Qwen-Image-Edit 50 steps; 2509 and 2511 40 steps; all true_cfg_scale 4.0 and negative " ".
        # The transformer is not guidance-distilled, so guidance_scale stays unset (diffusers ignores it).
        return Defaults(num_inference_steps=40 if self.plus else 50, true_cfg_scale=4.0, negative_prompt=" ")

    def describe(self) -> str:
        return "Qwen-Image-Edit-2509/2511 (QwenImageEditPlusPipeline)" if self.plus else super().describe()

    def _module(self):
        if self.plus:
            from diffusers.pipelines.qwenimage import (
                pipeline_qwenimage_edit_plus as module,
            )
        else:
            from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit as module
        return module

    def multiple_of(self, folder: str) -> int:
        config = read_component_config(folder, "vae")
        return 2 * 2 ** len(config.get("temperal_downsample", [False, True, True]))

    def reference_size(self, width: int, height: int, area: int) -> tuple[int, int]:
        """The VAE reference size diffusers picks, at ``area`` instead of 1024x1024."""
        w, h = self._module().calculate_dimensions(area, width / height)[:2]
        return w, h

    def bucket_key(self, width: int, height: int, area: int, multiple: int) -> tuple:
        return self.reference_size(width, height, area) + output_size(width, height, area, multiple)

    def negative_prompt(self, params: dict):
        return params["negative_prompt"] if params["true_cfg_scale"] > 1 else None

    def context(self, pipe: Any, params: dict):
        return _reference_area(self._module(), self.plus, params["area"])

    def _condition_images(self, pipe: Any, references: list, area: int) -> Any:
        """The images the VLM sees, resized exactly as the pipeline resizes them."""
        module = self._module()
        if self.plus:
            sized = []
            for image in references:
                w, h = module.calculate_dimensions(module.CONDITION_IMAGE_SIZE, image.width / image.height)
                sized.append(pipe.image_processor.resize(image, h, w))
            return sized
        w, h = self.reference_size(references[0].width, references[0].height, area)
        return pipe.image_processor.resize(references[0], h, w)

    def encode(self, pipe: Any, prompt: str, references: list, params: dict) -> tuple:
        import torch

        images = self._condition_images(pipe, references, params["area"])
        embeds, mask = pipe.encode_prompt(prompt=[prompt], image=images, device=pipe._execution_device,
                                          num_images_per_prompt=1)
        if mask is None:  # diffusers drops an all-ones mask; pass it back so the pipeline does not warn
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        return embeds, mask

    def call(self, pipe: Any, rows: Sequence[Row], key: tuple, params: dict) -> list:
        (row,) = rows
        _, _, out_w, out_h = key
        cfg = params["true_cfg_scale"] > 1
        masks = [row.embeddings[1]] + ([row.negative[1]] if cfg else [])
        unmasked = _without_text_mask(pipe.transformer) if all(_all_ones(m) for m in masks) else contextlib.nullcontext()
        with unmasked:
            return self._call(pipe, row, out_w, out_h, cfg, params)

    def _call(self, pipe: Any, row: Row, out_w: int, out_h: int, cfg: bool, params: dict) -> list:
        output = pipe(
            image=row.references if self.plus else row.references[0],
            prompt_embeds=row.embeddings[0],
            prompt_embeds_mask=row.embeddings[1],
            negative_prompt_embeds=row.negative[0] if cfg else None,
            negative_prompt_embeds_mask=row.negative[1] if cfg else None,
            true_cfg_scale=params["true_cfg_scale"],
            height=out_h,
            width=out_w,
            num_inference_steps=params["num_inference_steps"],
            sigmas=params.get("sigmas"),  # a recipe's schedule (None: the scheduler's own)
            guidance_scale=params["guidance_scale"],
            num_images_per_prompt=len(row.generators),
            generator=row.generators,
            max_sequence_length=params["max_sequence_length"],
        )
        return list(output.images)


def _all_ones(mask: Any) -> bool:
    """Whether a text mask lets every token through (None: diffusers dropped an all-ones mask already)."""
    return mask is None or bool(mask.all())


@contextlib.contextmanager
def _without_text_mask(transformer: Any):
    """For the duration of one pipeline call, the transformer is called without ``encoder_hidden_states_mask``.

    Only for calls whose masks are all ones: such a mask changes nothing but which attention kernel runs (a masked
    SDPA call takes a slower one, and FP8 attention leaves it exact).
    """

    def drop_mask(module, args, kwargs):
        if kwargs.get("encoder_hidden_states_mask") is None:
            return None
        return args, dict(kwargs, encoder_hidden_states_mask=None)

    handle = transformer.register_forward_pre_hook(drop_mask, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def _reference_area(module: Any, plus: bool, area: int):
    """Size the pipeline's VAE references at ``area`` for the duration of one call."""
    if area == DIFFUSERS_REFERENCE_AREA:
        yield
        return
    with _SIZING_LOCK:
        if plus:
            saved = module.VAE_IMAGE_SIZE
            module.VAE_IMAGE_SIZE = area
            try:
                yield
            finally:
                module.VAE_IMAGE_SIZE = saved
        else:
            original = module.calculate_dimensions

            def at_area(target_area, ratio):
                return original(area if target_area == DIFFUSERS_REFERENCE_AREA else target_area, ratio)

            module.calculate_dimensions = at_area
            try:
                yield
            finally:
                module.calculate_dimensions = original
