"""Build tiny, random-weight Qwen-Image-Edit pipelines on disk for offline tests.

``build_tiny_qwen_edit(folder, plus=True)`` saves a ``QwenImageEditPlusPipeline`` (the 2509/2511 layout: several
input images), ``plus=False`` a ``QwenImageEditPipeline``. Both load back as a user's local model does::

    QwenImageEditPlusPipeline.from_pretrained(folder, torch_dtype=torch.float32)

The shapes follow diffusers' own Qwen-Image-Edit tests (a 2-layer MMDiT, a 4-channel VAE, a 2-layer Qwen2.5-VL),
except for the VAE: one downsampling stage, so ``vae_scale_factor == 2`` and output sides are multiples of 4. The
text encoder's token ids (image pad, vision start/end, vocabulary size) come from the locally written tokenizer
(``tests.tiny_tokenizers``); the image processor's pixel bounds are Qwen2.5-VL's, so the VLM sees what it would.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImageEditPipeline,
    QwenImageEditPlusPipeline,
    QwenImageTransformer2DModel,
)
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLProcessor
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

from tests.tiny_tokenizers import build_qwen2_tokenizer

SEED = 0
TEXT_DIM = 16
Z_DIM = 4


def build_text_encoder(tokenizer) -> Qwen2_5_VLForConditionalGeneration:
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": TEXT_DIM,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "vocab_size": len(tokenizer),
            "bos_token_id": None,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [1, 1, 2]},
        },
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2,
                       "out_hidden_size": TEXT_DIM},
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(SEED)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def build_processor(tokenizer) -> Qwen2VLProcessor:
    return Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(), tokenizer=tokenizer,
                            video_processor=Qwen2VLVideoProcessor())


def build_transformer() -> QwenImageTransformer2DModel:
    torch.manual_seed(SEED)
    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=4 * Z_DIM,  # 2x2-packed latents
        out_channels=Z_DIM,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=TEXT_DIM,
        guidance_embeds=False,  # as the real model: true CFG, not distilled guidance
        axes_dims_rope=(8, 4, 4),
    ).eval()


def build_vae() -> AutoencoderKLQwenImage:
    torch.manual_seed(SEED)
    return AutoencoderKLQwenImage(
        base_dim=Z_DIM * 6,
        z_dim=Z_DIM,
        dim_mult=[1, 2],
        num_res_blocks=1,
        temperal_downsample=[False],  # one stage: vae_scale_factor == 2
        latents_mean=[0.0] * Z_DIM,
        latents_std=[1.0] * Z_DIM,
    ).eval()


def build_scheduler() -> FlowMatchEulerDiscreteScheduler:
    # Qwen-Image's scheduler settings (dynamic shift).
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
        base_image_seq_len=256, max_image_seq_len=8192, shift_terminal=0.02, time_shift_type="exponential",
    )


def build_pipeline(plus: bool = True):
    """A tiny random-weight pipeline in float32 on CPU (not saved)."""
    tokenizer = build_qwen2_tokenizer()
    cls = QwenImageEditPlusPipeline if plus else QwenImageEditPipeline
    return cls(
        scheduler=build_scheduler(),
        vae=build_vae(),
        text_encoder=build_text_encoder(tokenizer),
        tokenizer=tokenizer,
        processor=build_processor(tokenizer),
        transformer=build_transformer(),
    )


def build_tiny_qwen_edit(folder: str, plus: bool = True) -> str:
    """Save a tiny random-weight Qwen-Image-Edit(-Plus) pipeline to ``folder`` and return ``folder``."""
    build_pipeline(plus).save_pretrained(folder)
    return folder
