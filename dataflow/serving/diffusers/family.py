"""What differs between the diffusers editing models: one small adapter per model family.

An adapter names the diffusers pipeline classes of its family, its defaults, how many reference images a row may
have, how references and the output are sized, how the text (or vision-language) encoder is called, and how the
pipeline is called. ``DiffusersEditServing`` does everything else once for all of them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from dataflow.core.errors import ModelLoadError


@dataclass(frozen=True)
class Defaults:
    """The values a caller does not set, from the pipeline and the model card of one model."""

    num_inference_steps: int
    guidance_scale: Optional[float] = None
    true_cfg_scale: Optional[float] = None
    negative_prompt: Optional[str] = None


@dataclass
class Row:
    """One row of a pipeline call: its sized references, its embeddings and one generator per output image."""

    references: list
    embeddings: Any
    negative: Any
    generators: list


class Family:
    """Base class of the adapters. Subclasses set the class attributes and implement the hooks below.

    ``variant`` is the pipeline class name from the folder's ``model_index.json``; ``index`` is that file's content;
    ``source`` is the model as the caller named it (a folder or a Hub id), for families whose variants share a
    pipeline class and differ only by name (LongCat-Image-Edit and its Turbo).
    """

    name: str = ""  # the ``diffuser_model_name``, e.g. "Qwen-Image-Edit"
    display_name: str = ""
    class_names: tuple = ()
    #: how many rows one pipeline call takes (None: a whole bucket); pipelines that share references across a
    #: call's prompts, or take one prompt per call, edit one row per call
    rows_per_call: Optional[int] = None
    #: whether the encoder sees the reference images (then its outputs are cached per (text, images))
    encoder_sees_images: bool = False
    takes_negative_prompt: bool = False
    # Speedups that apply (``acceleration``): fused QKV, the FLUX.1 block rewrites (split output projection, fused
    # GELU), the transformer's block lists converted to FP8, and a cache context the pipeline does not open itself.
    fuse_qkv: bool = False
    flux_rewrites: bool = False
    fp8_blocks: tuple = ("transformer_blocks",)
    needs_cache_context: bool = False
    first_block_cache: bool = True  # diffusers' first-block cache works on this family's blocks
    default_max_sequence_length: int = 512
    #: the model family whose LoRAs fit (``lora.SIGNATURES``): FLUX.1 LoRAs fit Kontext, Qwen-Image's fit Edit
    lora_family: str = ""

    def __init__(self, variant: str, index: Optional[dict] = None, source: Optional[str] = None):
        if variant not in self.class_names:
            raise ModelLoadError(f"{variant} is not a {self.name} pipeline ({', '.join(self.class_names)})")
        self.variant = variant
        self.index = index or {}
        self.source = source

    # -- per-variant facts ------------------------------------------------------------------------------
    @property
    def max_input_images(self) -> int:
        raise NotImplementedError

    @property
    def defaults(self) -> Defaults:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.display_name} ({self.variant})"

    # -- sizes ------------------------------------------------------------------------------------------
    def multiple_of(self, folder: str) -> int:
        """Output sides must be multiples of this: VAE downsampling times the 2x2 patching (from the VAE config)."""
        return 2 * _vae_scale_from_blocks(folder)

    def multiple_of_pipe(self, pipe: Any) -> int:
        return pipe.vae_scale_factor * 2

    def bucket_key(self, width: int, height: int, area: int, multiple: int) -> tuple:
        """Sizes that decide a call's shapes for a first image of this size: (reference size, output size)."""
        raise NotImplementedError

    def references(self, images: Sequence, key: tuple) -> list:
        """The row's reference images as the pipeline should get them."""
        return list(images)

    def row_error(self, images: Sequence) -> Optional[str]:
        """Why this family cannot edit a row with these images, or None."""
        return None

    def negative_prompt(self, params: dict) -> Optional[str]:
        """The prompt to guide away from (its embeddings are cached like the instruction's), or None."""
        return None

    # -- model calls ------------------------------------------------------------------------------------
    def encode(self, pipe: Any, prompt: str, references: list, params: dict) -> Any:
        """The encoder's outputs for one row (batch of 1), in whatever form ``call`` takes them."""
        raise NotImplementedError

    def call(self, pipe: Any, rows: Sequence[Row], key: tuple, params: dict) -> list:
        """One pipeline call for ``rows``; returns their images, row after row."""
        raise NotImplementedError

    def context(self, pipe: Any, params: dict):
        """A context around the pipeline call (patches the reference sizing where a family needs it)."""
        import contextlib

        return contextlib.nullcontext()


def image_digest(image: Any) -> str:
    """Identity of a picture's pixels, for caching encoder outputs that depend on the images."""
    return hashlib.sha1(f"{image.size}{image.mode}".encode() + image.tobytes()).hexdigest()


def read_model_index(folder: str) -> dict:
    path = os.path.join(folder, "model_index.json")
    try:
        with open(path, encoding="utf-8") as handle:
            index = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
    if not isinstance(index, dict) or not isinstance(index.get("_class_name"), str):
        raise ModelLoadError(f"{path} names no pipeline class (_class_name)")
    return index


def _vae_scale_from_blocks(folder: str) -> int:
    """2 ** (number of VAE blocks - 1), as diffusers computes it for FLUX VAEs, from ``vae/config.json``."""
    config = read_component_config(folder, "vae")
    try:
        return 2 ** (len(config["block_out_channels"]) - 1)
    except (KeyError, TypeError) as exc:
        raise ModelLoadError(f"cannot read the VAE's block_out_channels in {folder}/vae: {exc}") from None


def read_component_config(folder: str, component: str) -> dict:
    path = os.path.join(folder, component, "config.json")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
