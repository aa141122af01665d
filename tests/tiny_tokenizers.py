"""Byte-level BPE tokenizers of the Qwen family, written locally (no Hub), for the tiny test pipelines.

``Qwen2Tokenizer`` (transformers 5) takes its vocabulary and merges as Python objects. The vocabulary holds the
256-symbol byte-level alphabet, so any text tokenizes without unknown tokens, plus a few merged words; the chat
and vision markers the pipelines' prompt templates use are added as special tokens, so they stay whole.
"""

from __future__ import annotations

from transformers import AddedToken, Qwen2Tokenizer

from tests.tiny_kontext import WORDS, _byte_level_alphabet

# The markers of Qwen2.5-VL's and Qwen3's chat templates, in Qwen's order.
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
    "<|video_pad|>", "<think>", "</think>",
)

# Qwen3's template with ``enable_thinking=False``, reduced to what one user message needs.
QWEN3_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)

SPACE = "\u0120"  # byte-level BPE's symbol for a leading space


def _merges() -> list[tuple[str, str]]:
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        merged = SPACE
        for char in word:
            merges.append((merged, char))
            merged += char
    return list(dict.fromkeys(merges))


def build_qwen2_tokenizer(max_length: int = 1024) -> Qwen2Tokenizer:
    """A Qwen2 tokenizer: byte-level alphabet, merged words (" red", " cat" ...), Qwen's special tokens."""
    merges = _merges()
    tokens = list(_byte_level_alphabet())
    tokens += [left + right for left, right in merges if left + right not in tokens]
    tokenizer = Qwen2Tokenizer(
        vocab={token: i for i, token in enumerate(tokens)},
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=max_length,
    )
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS]}
    )
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    return tokenizer

# Qwen3-VL's template reduced to text and image parts: ``QwenImage21Pipeline`` counts the tokens of a system message
# through it, and the count must match the prompt it formats by hand.
QWEN3_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
