"""Tiny random-weight CLIP, DINOv2 and LLaVA models saved as local folders, for offline metric tests.

Each folder is what ``save_pretrained`` writes (config, weights, processor files), so the metrics load it the way
they load a user's local model. None of them needs torchvision: the image processors are transformers' PIL ones.

The LLaVA judge's tokenizer is a word-level ``tokenizers`` model wrapped in ``PreTrainedTokenizerFast``. Its
vocabulary holds no digits, so whatever the random model says can never parse as scores.
"""

from __future__ import annotations

import torch
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
    BitImageProcessorPil,
    Dinov2Config,
    Dinov2Model,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

SEED = 0
IMAGE_SIZE = 32
CLIP_TEXT_POSITIONS = 16  # far below the tokenizer's 77, so long instructions must be truncated by the metric


def _pixels(size: int) -> dict:
    return {"size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size}}


def build_clip_tokenizer() -> CLIPTokenizer:
    """A byte-level BPE CLIP tokenizer without merges: lower-case letters, digits and a few marks, one token each
    (as in ``tests/tiny_kontext.py``, the vocabulary is passed as objects: transformers 5 ignores vocab files)."""
    symbols = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'")
    tokens = ["<|startoftext|>", "<|endoftext|>"] + symbols + [s + "</w>" for s in symbols]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], bos_token="<|startoftext|>",
                         eos_token="<|endoftext|>", unk_token="<|endoftext|>", pad_token="<|endoftext|>")


def build_tiny_clip(folder: str) -> str:
    tokenizer = build_clip_tokenizer()
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=CLIP_TEXT_POSITIONS, **ids),
        vision_config=dict(image_size=IMAGE_SIZE, patch_size=8, hidden_size=32, intermediate_size=37,
                           num_hidden_layers=2, num_attention_heads=4),
        projection_dim=16,
    )
    torch.manual_seed(SEED)
    CLIPModel(config).eval().save_pretrained(folder)
    processor = CLIPProcessor(image_processor=CLIPImageProcessorPil(**_pixels(IMAGE_SIZE)), tokenizer=tokenizer)
    processor.save_pretrained(folder)
    return folder


def build_tiny_dino(folder: str) -> str:
    config = Dinov2Config(image_size=IMAGE_SIZE, patch_size=8, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, mlp_ratio=2)
    torch.manual_seed(SEED)
    Dinov2Model(config).eval().save_pretrained(folder)
    BitImageProcessorPil(**_pixels(IMAGE_SIZE)).save_pretrained(folder)
    return folder


# -- a tiny VLM judge ------------------------------------------------------------------------------------------
VLM_SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
VLM_WORDS = ["user", "assistant", "the", "image", "edit", "good", "bad", "sky", "red", "is", "a", ":", ".", ",",
             "{", "}", '"', "reason"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['role'] }} :"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %} <image>"
    "{% else %} {{ part['text'] }}{% endif %}{% endfor %}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}assistant :{% endif %}"
)
VLM_IMAGE_SIZE = 16
VLM_PATCH = 8


def build_vlm_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(VLM_SPECIAL + VLM_WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in VLM_SPECIAL])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>")


def build_tiny_vlm(folder: str) -> str:
    """A LLaVA of a 1-layer CLIP vision tower and a 1-layer Llama, with its processor and chat template."""
    tokenizer = build_vlm_tokenizer()
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", image_size=VLM_IMAGE_SIZE, patch_size=VLM_PATCH,
                           hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           projection_dim=16),
        text_config=dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=1024, **ids),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=(VLM_IMAGE_SIZE // VLM_PATCH) ** 2,
        projector_hidden_act="gelu",
        **ids,
    )
    torch.manual_seed(SEED)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.update(**ids)
    model.save_pretrained(folder)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(**_pixels(VLM_IMAGE_SIZE)), tokenizer=tokenizer,
        patch_size=VLM_PATCH, vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
        image_token="<image>", num_additional_image_tokens=1,
    )
    processor.save_pretrained(folder)
    return folder
