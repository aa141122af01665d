"""A tiny random Qwen3-VL (text encoder and processor), written locally, for the Qwen-Image-2.1 and JoyAI-Image-Edit
test pipelines: a 2-layer language model and a 2-layer vision tower whose merged tokens cover 32x32 pixels, as the
released Qwen3-VL's (patch 16, merge 2), with the token ids of the locally written Qwen2 tokenizer."""

from __future__ import annotations

import torch
from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

from tests.tiny_tokenizers import QWEN3_VL_CHAT_TEMPLATE, build_qwen2_tokenizer

SEED = 0
TEXT_DIM = 16


def build_tokenizer():
    tokenizer = build_qwen2_tokenizer(max_length=4096)
    tokenizer.chat_template = QWEN3_VL_CHAT_TEMPLATE
    return tokenizer


def build_text_encoder(tokenizer) -> Qwen3VLForConditionalGeneration:
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen3VLConfig(
        text_config={
            "hidden_size": TEXT_DIM,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "vocab_size": len(tokenizer),
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [1, 1, 2]},
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": TEXT_DIM,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    torch.manual_seed(SEED)
    return Qwen3VLForConditionalGeneration(config).eval()


def build_processor(tokenizer) -> Qwen3VLProcessor:
    """Qwen3-VL's processor with its pixel bounds lowered to tiny images (at most 256x256 is seen as it is)."""
    return Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2,
                                              min_pixels=32 * 32, max_pixels=256 * 256),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2),
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
    )
