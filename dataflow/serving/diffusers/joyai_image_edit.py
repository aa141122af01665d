"""JoyAI-Image-Edit: ``JoyImageEditPipeline`` (one input image) and ``JoyImageEditPlusPipeline`` (JoyAI-Image-Edit-
Plus: 1-5 input images through ``images``), with a Qwen3-VL encoder that sees the images, and classifier-free
guidance against an empty prompt (guidance 4.0; the Plus pipeline's empty prompt is " ").

A row is one call (the Edit pipeline binds each prompt to its image, the Plus pipeline its prompts to their lists of
images); ``num_images_per_prompt`` makes a row's images in that call (Plus has no such argument: its prompt and
images are repeated per output image, each with its own generator). What is changed from plain diffusers:

1. the output keeps the **first** image's aspect ratio at the requested area (diffusers: the nearest of its 1 MP
   buckets to the input's, or to the last image's for Plus). diffusers snaps every size, even a given one, to a
   bucket; for the call, the pipeline's bucket choice keeps the sizes given here;
2. the references are sized at the requested area too: the Edit image is cropped to the output size (diffusers: to
   the output bucket), each Plus image to the bucket nearest its aspect ratio, scaled to the area (at the default
   1024 x 1024, diffusers' bucket exactly);
3. the Qwen3-VL encoder runs once per distinct (instruction, images), and once per images for the negative prompt;
4. diffusers 0.42.1's Plus pipeline formats its prompts even when given their embeddings (``len(None)``), yet
   refuses a prompt beside them: it gets empty placeholder prompts, and its input check sees only the embeddings;
5. the Edit pipeline samples its reference latents from the global random generator (``latent_dist.sample()``);
   that draw is seeded from the row's first generator, so a row's pixels do not depend on its batch.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

from dataflow.serving.diffusers.family import (
    Defaults,
    Family,
    Row,
    read_component_config,
)
from dataflow.serving.diffusers.resolution import output_size, reference_size

MAX_SEQUENCE_LENGTH = 4096  # both pipelines' default: image tokens count too


class JoyAIImageEditFamily(Family):
    name = "JoyAI-Image-Edit"
    display_name = "JoyAI-Image-Edit"
    class_names = ("JoyImageEditPipeline", "JoyImageEditPlusPipeline")
    rows_per_call = 1
    encoder_sees_images = True
    fp8_blocks = ("double_blocks",)
    first_block_cache = False  # diffusers 0.42.1 has no block metadata for JoyImage blocks
    default_max_sequence_length = MAX_SEQUENCE_LENGTH

    @property
    def plus(self) -> bool:
        return self.variant == "JoyImageEditPlusPipeline"

    @property
    def max_input_images(self) -> int:
        # diffusers sets no limit for Plus; its model card gives 1-5 reference images.
        return 5 if self.plus else 1

    @property
    def defaults(self) -> Defaults:
        # diffusers' defaults and the model cards: Edit 40 steps, Plus 30 steps; both guidance 4.0.
        return Defaults(num_inference_steps=30 if self.plus else 40, guidance_scale=4.0)

    def describe(self) -> str:
        return f"JoyAI-Image-Edit-Plus ({self.variant})" if self.plus else super().describe()

    def multiple_of(self, folder: str) -> int:
        """The VAE's spatial factor times the transformer's spatial patch (8 x 2 for the released models)."""
        vae = read_component_config(folder, "vae")
        patch = read_component_config(folder, "transformer").get("patch_size", [1, 2, 2])
        return int(vae.get("scale_factor_spatial") or 8) * int(patch[-1])

    def multiple_of_pipe(self, pipe: Any) -> int:
        return pipe.vae_scale_factor_spatial * int(pipe.transformer.config.patch_size[-1])

    def reference_size(self, width: int, height: int, area: int, multiple: int) -> tuple[int, int]:
        from diffusers.pipelines.joyimage.image_processor import BUCKETS

        return reference_size(width, height, [(w, h) for h, w in BUCKETS[1024]], area, multiple)

    def bucket_key(self, width: int, height: int, area: int, multiple: int) -> tuple:
        out = output_size(width, height, area, multiple)
        ref = self.reference_size(width, height, area, multiple) if self.plus else out
        return ref + out + (area, multiple)

    def references(self, images: Sequence, key: tuple) -> list:
        from diffusers.pipelines.joyimage.image_processor import (
            JoyImageEditImageProcessor,
        )

        processor = JoyImageEditImageProcessor()  # its resize_center_crop: cover the size, then crop the centre
        area, multiple = key[4:6]
        sized = []
        for i, image in enumerate(images):
            w, h = key[:2] if i == 0 else self.reference_size(image.width, image.height, area, multiple)
            sized.append(image if image.size == (w, h) else processor.resize_center_crop(image, (h, w)))
        return sized

    def negative_prompt(self, params: dict):
        if (params["guidance_scale"] or 0) <= 1:
            return None
        return " " if self.plus else ""  # what each pipeline encodes when given no negative prompt

    def encode(self, pipe: Any, prompt: str, references: list, params: dict) -> tuple:
        device = pipe._execution_device
        if self.plus:
            tags = "<image>\n" * len(references)
            return pipe.encode_prompt_multiple_images(
                prompt=[f"<|im_start|>user\n{tags}{prompt}<|im_end|>\n"], images=list(references), device=device,
                max_sequence_length=params["max_sequence_length"])
        return pipe.encode_prompt_multiple_images(prompt=[prompt], images=references[0], device=device,
                                                  max_sequence_length=params["max_sequence_length"])

    def call(self, pipe: Any, rows: Sequence[Row], key: tuple, params: dict) -> list:
        (row,) = rows
        out_w, out_h = key[2:4]
        n = len(row.generators)
        options = dict(prompt_embeds=row.embeddings[0], prompt_embeds_mask=row.embeddings[1], height=out_h,
                       width=out_w, num_inference_steps=params["num_inference_steps"],
                       guidance_scale=params["guidance_scale"], generator=row.generators,
                       max_sequence_length=params["max_sequence_length"])
        if row.negative is not None:
            options.update(negative_prompt_embeds=row.negative[0], negative_prompt_embeds_mask=row.negative[1])
        if self.plus:
            for name in ("prompt_embeds", "prompt_embeds_mask", "negative_prompt_embeds",
                         "negative_prompt_embeds_mask"):
                if name in options:  # one copy per output image, each with its own generator
                    options[name] = options[name].repeat(n, *[1] * (options[name].dim() - 1))
            with _sizes_kept(pipe.image_processor), _embeddings_with_placeholder_prompts(pipe):
                return list(pipe(images=[list(row.references)] * n, prompt=[""] * n, **options).images)
        import torch

        devices = [pipe._execution_device] if pipe._execution_device.type == "cuda" else []
        with _sizes_kept(pipe.vae_image_processor), torch.random.fork_rng(devices=devices):
            torch.manual_seed(row.generators[0].initial_seed())
            return list(pipe(image=row.references[0], num_images_per_prompt=n, **options).images)


@contextlib.contextmanager
def _sizes_kept(processor: Any):
    """Make the processor's bucket choice keep the sizes it is given: the height and width passed, else the image's
    own size (references here are already sized)."""

    def get_default_height_width(image, height=None, width=None):
        if height is not None and width is not None:
            return height, width
        return image.height, image.width

    processor.get_default_height_width = get_default_height_width
    try:
        yield
    finally:
        del processor.get_default_height_width


@contextlib.contextmanager
def _embeddings_with_placeholder_prompts(pipe: Any):
    """Let the Plus pipeline take placeholder prompts beside ``prompt_embeds`` (the embeddings are what it uses)."""
    original = pipe.check_inputs

    def check_inputs(prompt=None, prompt_embeds=None, **kwargs):
        return original(prompt=None if prompt_embeds is not None else prompt, prompt_embeds=prompt_embeds, **kwargs)

    pipe.check_inputs = check_inputs
    try:
        yield
    finally:
        del pipe.check_inputs
