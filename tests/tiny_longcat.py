"""Build a tiny, random-weight LongCat-Image-Edit pipeline (``LongCatImageEditPipeline``) on disk for offline tests.

It loads back as a user's local model does::

    LongCatImageEditPipeline.from_pretrained(folder, torch_dtype=torch.float32)

The pipeline hard-codes 16 latent channels (``num_channels_latents = 16``), so the VAE keeps 16 latent channels and
the transformer takes their 2x2 packing (64); everything else is shrunk: a 1+1-layer FLUX-style transformer, a VAE of
two blocks (``vae_scale_factor == 2``: output sides are multiples of 4) and the 2-layer Qwen2.5-VL of the tiny
Qwen-Image-Edit (``tests.tiny_qwen_edit``), with its locally written tokenizer and processor. ``turbo=True`` only
changes the folder's name, which is how the serving tells LongCat-Image-Edit-Turbo apart (docs/backends.md).
"""

from __future__ import annotations

import os

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    LongCatImageEditPipeline,
    LongCatImageTransformer2DModel,
)

from tests.tiny_qwen_edit import TEXT_DIM, build_processor, build_text_encoder
from tests.tiny_tokenizers import build_qwen2_tokenizer

SEED = 0
LATENT_CHANNELS = 16  # LongCatImageEditPipeline.__call__: num_channels_latents = 16


def build_transformer() -> LongCatImageTransformer2DModel:
    torch.manual_seed(SEED)
    return LongCatImageTransformer2DModel(
        patch_size=1,
        in_channels=4 * LATENT_CHANNELS,  # 2x2-packed latents
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT_DIM,
        pooled_projection_dim=TEXT_DIM,
        axes_dims_rope=[4, 6, 6],
    ).eval()


def build_vae() -> AutoencoderKL:
    torch.manual_seed(SEED)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(4, 4),  # two blocks: vae_scale_factor == 2
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=1,
        sample_size=32,
        scaling_factor=0.3611,
        shift_factor=0.1159,
    ).eval()


def build_pipeline() -> LongCatImageEditPipeline:
    """A tiny random-weight pipeline in float32 on CPU (not saved)."""
    tokenizer = build_qwen2_tokenizer()
    return LongCatImageEditPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=build_vae(),
        text_encoder=build_text_encoder(tokenizer),
        tokenizer=tokenizer,
        text_processor=build_processor(tokenizer),
        transformer=build_transformer(),
    )


def build_tiny_longcat(folder: str, card: str = "") -> str:
    """Save a tiny random-weight LongCat-Image-Edit pipeline to ``folder`` and return ``folder``.

    ``card``, if given, is written as the folder's model card (``README.md``), as a Hub download has one.
    """
    build_pipeline().save_pretrained(folder)
    if card:
        with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as handle:
            handle.write(card)
    return folder
