"""Build a tiny, random-weight ``FluxKontextPipeline`` on disk for offline tests.

The saved folder is a complete diffusers model folder (``model_index.json`` plus
one sub-folder per component), so it loads back exactly as a user's local model
does::

    FluxKontextPipeline.from_pretrained(folder, torch_dtype=torch.float32)

Every component is built locally from a config; nothing comes from the Hub.
The network shapes follow the tiny configs of diffusers' own Flux Kontext tests
(vae_scale_factor == 1, so height and width only need to be even).

Why the tokenizers are built this way (transformers 5.x):

* ``CLIPTokenizer`` no longer reads ``vocab_file=`` / ``merges_file=``; those
  keyword arguments are silently ignored and the tokenizer ends up with only
  its three default special tokens. The constructor takes the vocabulary and
  the merges as Python objects (``vocab=`` dict, ``merges=`` list of pairs), so
  they are passed that way. The vocabulary holds the full 256-symbol
  byte-level alphabet, each symbol also with the ``</w>`` end-of-word suffix,
  so any prompt tokenizes without unknown tokens. The suffix may only be glued
  to the last symbol of a merge (``("r", "e</w>")``), never to the first.
* ``T5TokenizerFast`` is an alias of ``T5Tokenizer``, whose constructor always
  rebuilds its backend as a ``Unigram`` model from ``vocab=`` (a list of
  ``(piece, score)`` pairs). On reload the vocabulary is read back from
  ``tokenizer.json`` and fed to that same constructor, so any other backend
  (e.g. a ``WordLevel`` model passed as ``tokenizer_object=``) saves but does
  not load back. Building it from a Unigram vocabulary directly makes the
  saved and the reloaded tokenizer identical. ``extra_ids=0`` keeps the
  hundred sentinel tokens out of the tiny vocabulary.

Token ids in the text-encoder configs (pad / bos / eos, vocab size) are taken
from the tokenizers, so the two always agree.
"""

from __future__ import annotations

import string

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxKontextPipeline,
    FluxTransformer2DModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

SEED = 0

# Sizes shared between components.
TEXT_DIM = 32  # CLIP hidden size == pooled projection dim; T5 d_model == joint attention dim
CLIP_MAX_LENGTH = 77
T5_MAX_LENGTH = 512

# Common prompt words that both tokenizers keep as whole tokens (CLIP via BPE
# merges, T5 via Unigram pieces); any other text falls back to single characters.
WORDS = ("the", "make", "it", "red", "blue", "cat", "dog", "photo", "image", "add", "a")

CLIP_BOS = "<|startoftext|>"
CLIP_EOS = "<|endoftext|>"
END_OF_WORD = "</w>"


# --------------------------------------------------------------------------- CLIP


def _byte_level_alphabet() -> list[str]:
    """The 256 printable symbols that byte-level BPE maps each byte onto (GPT-2 scheme)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    symbols = [chr(b) for b in printable]
    extra = 0
    for b in range(256):
        if b not in printable:
            symbols.append(chr(256 + extra))
            extra += 1
    return symbols


def _word_merges(word: str) -> list[tuple[str, str]]:
    """Left-to-right merges that turn ``word`` into one ``word</w>`` token."""
    merges = []
    merged = word[0]
    for i, char in enumerate(word[1:], start=1):
        last = i == len(word) - 1
        merges.append((merged, char + END_OF_WORD if last else char))
        merged += char
    return merges


def _clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    alphabet = _byte_level_alphabet()
    tokens = alphabet + [s + END_OF_WORD for s in alphabet]
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        for merge in _word_merges(word):
            if merge not in merges:
                merges.append(merge)
    for left, right in merges:
        if left + right not in tokens:
            tokens.append(left + right)
    tokens += [CLIP_BOS, CLIP_EOS]
    return {token: i for i, token in enumerate(tokens)}, merges


def build_clip_tokenizer() -> CLIPTokenizer:
    vocab, merges = _clip_vocab_and_merges()
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        bos_token=CLIP_BOS,
        eos_token=CLIP_EOS,
        unk_token=CLIP_EOS,
        pad_token=CLIP_EOS,
        model_max_length=CLIP_MAX_LENGTH,
    )


def build_clip_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_DIM,
        intermediate_size=37,
        projection_dim=TEXT_DIM,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(SEED)
    return CLIPTextModel(config).eval()


# --------------------------------------------------------------------------- T5


def _t5_vocab() -> list[tuple[str, float]]:
    """Unigram pieces: specials at T5's fixed ids, then words, then single characters."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + word, -3.0) for word in WORDS]
    chars = string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation
    vocab += [("\u2581" + char, -6.0) for char in chars]
    vocab += [(char, -5.0) for char in chars]
    return vocab


def build_t5_tokenizer() -> T5TokenizerFast:
    return T5TokenizerFast(vocab=_t5_vocab(), extra_ids=0, model_max_length=T5_MAX_LENGTH)


def build_t5_text_encoder(tokenizer: T5TokenizerFast) -> T5EncoderModel:
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(SEED)
    return T5EncoderModel(config).eval()


# --------------------------------------------------------------------------- image side


def build_transformer() -> FluxTransformer2DModel:
    torch.manual_seed(SEED)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,  # 2x2-packed latents of a 1-channel VAE
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT_DIM,
        pooled_projection_dim=TEXT_DIM,
        guidance_embeds=True,  # as in the real Kontext model
        axes_dims_rope=[4, 4, 8],  # sums to attention_head_dim
    ).eval()


def build_vae() -> AutoencoderKL:
    torch.manual_seed(SEED)
    return AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),  # one block: vae_scale_factor == 1
        layers_per_block=1,
        latent_channels=1,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    ).eval()


def build_scheduler() -> FlowMatchEulerDiscreteScheduler:
    # The real Flux scheduler settings, so the pipeline's dynamic shift (mu) is used.
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


# --------------------------------------------------------------------------- pipeline


def build_pipeline() -> FluxKontextPipeline:
    """A tiny random-weight pipeline in float32 on CPU (not saved)."""
    tokenizer = build_clip_tokenizer()
    tokenizer_2 = build_t5_tokenizer()
    return FluxKontextPipeline(
        scheduler=build_scheduler(),
        vae=build_vae(),
        text_encoder=build_clip_text_encoder(tokenizer),
        tokenizer=tokenizer,
        text_encoder_2=build_t5_text_encoder(tokenizer_2),
        tokenizer_2=tokenizer_2,
        transformer=build_transformer(),
    )


def build_tiny_kontext(folder: str) -> str:
    """Save a tiny random-weight FluxKontextPipeline to ``folder`` and return ``folder``.

    The result is deterministic (fixed seeds) and loads offline with
    ``FluxKontextPipeline.from_pretrained(folder, torch_dtype=torch.float32)``.
    """
    build_pipeline().save_pretrained(folder)
    return folder
