"""Build a tiny, random-weight Qwen-Image-2.1 pipeline (``QwenImage21Pipeline``) on disk for offline tests.

It loads back as a user's local model does::

    QwenImage21Pipeline.from_pretrained(folder, torch_dtype=torch.float32)

The shapes follow diffusers' own Qwen-Image-2.1 tests: a 2-layer single-stream transformer on 8 latent channels, a
VAE with the 16x spatial compression the pipeline assumes (``vae_scale_factor`` is fixed at 16, so output sides are
multiples of 32), and the tiny Qwen3-VL of ``tests.tiny_qwen3_vl``.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKLQwenImage21,
    FlowMatchEulerDiscreteScheduler,
    QwenImage21Pipeline,
    QwenImage21Transformer2DModel,
)

from tests.tiny_qwen3_vl import TEXT_DIM, build_processor, build_text_encoder, build_tokenizer

SEED = 0
Z_DIM = 8  # not 4: the pipeline takes a 4-channel (RGBA) condition image for latents when z_dim is 4


def build_transformer() -> QwenImage21Transformer2DModel:
    torch.manual_seed(SEED)
    return QwenImage21Transformer2DModel(
        patch_size=1,
        in_channels=Z_DIM,
        out_channels=Z_DIM,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        context_in_dim=TEXT_DIM,
        mlp_ratio=2,
        axes_dims_rope=(4, 6, 6),
    ).eval()


def build_vae() -> AutoencoderKLQwenImage21:
    torch.manual_seed(SEED)
    return AutoencoderKLQwenImage21(
        base_dim=4,
        decoder_base_dim=4,
        z_dim=Z_DIM,
        dim_mult=[1, 1, 1, 1, 1],  # four spatial downsamples: 16x
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=[False, True, True, True],
        latents_mean=[0.0] * Z_DIM,
        latents_std=[1.0] * Z_DIM,
    ).eval()


def build_pipeline() -> QwenImage21Pipeline:
    """A tiny random-weight pipeline in float32 on CPU (not saved)."""
    tokenizer = build_tokenizer()
    return QwenImage21Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=build_vae(),
        text_encoder=build_text_encoder(tokenizer),
        processor=build_processor(tokenizer),
        transformer=build_transformer(),
    )


def build_tiny_qwen_image21(folder: str) -> str:
    """Save a tiny random-weight Qwen-Image-2.1 pipeline to ``folder`` and return ``folder``."""
    build_pipeline().save_pretrained(folder)
    return folder
