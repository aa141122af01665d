"""Build a tiny, random-weight FLUX.2 [klein] pipeline (``Flux2KleinPipeline``) on disk for offline tests.

It loads back as a user's local model does::

    Flux2KleinPipeline.from_pretrained(folder, torch_dtype=torch.float32)

The shapes follow diffusers' own FLUX.2 [klein] tests (a 1+1-layer transformer, a 1-channel VAE), with a VAE of two
blocks (``vae_scale_factor == 2``: output sides are multiples of 4) and a Qwen3 text encoder of 28 layers, so that
the pipeline's default hidden-state layers (9, 18, 27) exist, as in the real 4B and 9B models. The tokenizer is a
Qwen2 tokenizer written locally (``tests.tiny_tokenizers``) with a Qwen3 chat template. ``distilled=True`` (the
default) saves ``is_distilled: true`` in ``model_index.json``, as FLUX.2 [klein] 4B / 9B; False, as the base models.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Transformer2DModel
from transformers import Qwen3Config, Qwen3ForCausalLM

from tests.tiny_tokenizers import build_qwen2_tokenizer

SEED = 0
TEXT_DIM = 16
TEXT_LAYERS = 28


def build_text_encoder(tokenizer) -> Qwen3ForCausalLM:
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_DIM,
        intermediate_size=16,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=512,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(SEED)
    return Qwen3ForCausalLM(config).eval()


def build_transformer() -> Flux2Transformer2DModel:
    torch.manual_seed(SEED)
    return Flux2Transformer2DModel(
        patch_size=1,
        in_channels=4,  # 2x2-patchified latents of a 1-channel VAE
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=3 * TEXT_DIM,  # three hidden-state layers stacked
        timestep_guidance_channels=256,
        axes_dims_rope=[4, 4, 4, 4],
        guidance_embeds=False,  # as [klein]
    ).eval()


def build_vae() -> AutoencoderKLFlux2:
    torch.manual_seed(SEED)
    return AutoencoderKLFlux2(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(4, 4),  # two blocks: vae_scale_factor == 2
        layers_per_block=1,
        latent_channels=1,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).eval()


def build_pipeline(distilled: bool = True) -> Flux2KleinPipeline:
    """A tiny random-weight pipeline in float32 on CPU (not saved)."""
    tokenizer = build_qwen2_tokenizer(max_length=512)
    return Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=build_vae(),
        text_encoder=build_text_encoder(tokenizer),
        tokenizer=tokenizer,
        transformer=build_transformer(),
        is_distilled=distilled,
    )


def build_tiny_flux2_klein(folder: str, distilled: bool = True) -> str:
    """Save a tiny random-weight FLUX.2 [klein] pipeline to ``folder`` and return ``folder``."""
    build_pipeline(distilled).save_pretrained(folder)
    return folder
