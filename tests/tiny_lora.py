"""Tiny LoRAs for the tiny test pipelines, made as a trainer makes them: peft adapters on the transformer, saved with
the pipeline class's ``save_lora_weights`` (diffusers' key format, ``pytorch_lora_weights.safetensors``).

``save_tiny_lora(tiny_qwen_edit, folder)`` adds a LoRA with random A and B (``init_lora_weights=False``; peft's
default B = 0 would change nothing) to a fresh copy of the family's tiny transformer and saves its layers, times
``gain``: the tiny random models barely react to a LoRA of the usual size (a few grey levels), 4x moves pixels by
tens of levels, so "the LoRA changes the output" is far from the tolerance of "fused equals unfused".
``to_kohya`` rewrites such a file into the kohya / sd-scripts key format (``lora_unet_..._to_q.lora_down.weight``
plus ``.alpha``), one of the formats diffusers converts on load.
"""

from __future__ import annotations

import os

import diffusers
import torch
from peft import LoraConfig, get_peft_model_state_dict
from safetensors.torch import load_file, save_file

ATTENTION = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]
# Attention and MLP layers, as trainers target them; the MLPs' names differ per family.
TARGETS = {
    "tests.tiny_kontext": ATTENTION + ["ff.net.0.proj", "proj_mlp"],
    "tests.tiny_qwen_edit": ATTENTION + ["img_mlp.net.0.proj", "txt_mlp.net.0.proj"],
    "tests.tiny_flux2": ATTENTION + ["to_qkv_mlp_proj", "ff.linear_in"],
}
PIPELINES = {"tests.tiny_kontext": "FluxKontextPipeline", "tests.tiny_qwen_edit": "QwenImageEditPlusPipeline",
             "tests.tiny_flux2": "Flux2KleinPipeline"}
WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def save_tiny_lora(module, folder: str, seed: int = 1, rank: int = 4, weight_name: str = WEIGHT_NAME,
                   gain: float = 4.0) -> str:
    """Save a random LoRA for ``module``'s (``tests.tiny_*``) transformer into ``folder``; return the file path."""
    transformer = module.build_transformer()
    pipeline_class = getattr(diffusers, PIPELINES[module.__name__])
    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False, target_modules=TARGETS[module.__name__])
    torch.manual_seed(seed)
    transformer.add_adapter(config)
    layers = {key: value * gain for key, value in get_peft_model_state_dict(transformer).items()}
    pipeline_class.save_lora_weights(folder, transformer_lora_layers=layers, weight_name=weight_name,
                                     transformer_lora_adapter_metadata=config.to_dict())
    return os.path.join(folder, weight_name)


def to_kohya(path: str, out: str, rank: int = 4) -> str:
    """The LoRA in ``path`` (diffusers keys, alpha == rank) in kohya's keys: ``lora_unet_<module with _>``,
    ``lora_down`` / ``lora_up`` and an ``alpha`` per module."""
    converted = {}
    for key, value in load_file(path).items():
        module, _, part = key.removeprefix("transformer.").partition(".lora_")
        name = "lora_unet_" + module.replace(".", "_")
        converted[f"{name}.{'lora_down' if part.startswith('A') else 'lora_up'}.weight"] = value
        converted[f"{name}.alpha"] = torch.tensor(float(rank))
    save_file(converted, out)
    return out
