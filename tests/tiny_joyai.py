"""Build tiny, random-weight JoyAI-Image-Edit pipelines on disk for offline tests.

``build_tiny_joyai(folder, plus=False)`` saves a ``JoyImageEditPipeline`` (one input image), ``plus=True`` a
``JoyImageEditPlusPipeline`` (JoyAI-Image-Edit-Plus: several). Both load back as a user's local model does::

    JoyImageEditPlusPipeline.from_pretrained(folder, torch_dtype=torch.float32)

The shapes follow diffusers' own JoyImage tests: a 1-layer double-stream transformer (patch 1x2x2), a Wan VAE with
8x spatial compression (output sides are multiples of 16) whose output layer is scaled up, so that the pixels
depend on the latents, and the tiny Qwen3-VL of ``tests.tiny_qwen3_vl``.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    JoyImageEditPipeline,
    JoyImageEditPlusPipeline,
    JoyImageEditTransformer3DModel,
)
from diffusers.models.transformers.transformer_joyimage_edit_plus import JoyImageEditPlusTransformer3DModel

from tests.tiny_qwen3_vl import TEXT_DIM, build_processor, build_text_encoder, build_tokenizer

SEED = 0


def build_transformer(plus: bool):
    torch.manual_seed(SEED)
    cls = JoyImageEditPlusTransformer3DModel if plus else JoyImageEditTransformer3DModel
    return cls(patch_size=[1, 2, 2], in_channels=16, hidden_size=32, num_attention_heads=2, text_dim=TEXT_DIM,
               num_layers=1, rope_dim_list=[4, 6, 6], theta=256).eval()


def build_vae() -> AutoencoderKLWan:
    torch.manual_seed(SEED)
    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True]).eval()
    with torch.no_grad():  # a random decoder maps every latent to nearly the same grey; make the pixels follow them
        vae.decoder.conv_out.weight.mul_(10)
    return vae


def build_pipeline(plus: bool = False):
    """A tiny random-weight pipeline in float32 on CPU (not saved)."""
    tokenizer = build_tokenizer()
    cls = JoyImageEditPlusPipeline if plus else JoyImageEditPipeline
    return cls(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=build_vae(),
        text_encoder=build_text_encoder(tokenizer),
        tokenizer=tokenizer,
        transformer=build_transformer(plus),
        processor=build_processor(tokenizer),
    )


def build_tiny_joyai(folder: str, plus: bool = False) -> str:
    """Save a tiny random-weight JoyAI-Image-Edit(-Plus) pipeline to ``folder`` and return ``folder``."""
    build_pipeline(plus).save_pretrained(folder)
    return folder
