"""FLUX.1 Kontext editing through ``diffusers.FluxKontextPipeline``, made correct for batches.

``FluxKontextServing`` is the shared diffusers serving (``dataflow.serving.diffusers``) pinned to the FLUX.1 Kontext
family, with its short argument names and defaults (28 steps, guidance 3.5). What it adds to the plain pipeline:
  1. every row's output keeps its input's aspect ratio at the requested area (diffusers defaults to 1024x1024);
  2. ``bucket_key`` lets callers batch only rows of equal sizes (diffusers stretches a batch to ``image[0]``);
  3. images and prompts are expanded per output image here, because diffusers tiles them wrongly when
     ``num_images_per_prompt > 1`` is combined with several images;
  4. one CPU generator per output image, seeded from (seed, row key, k): results do not depend on batching;
  5. one text-encoder pass per distinct instruction (the embeddings are cached).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from dataflow.serving.diffusers.serving import DiffusersEditServing
from dataflow.serving.diffusers.speed.options import Acceleration

DEFAULT_MODEL = "black-forest-labs/FLUX.1-Kontext-dev"


class FluxKontextServing(DiffusersEditServing):
    """Instruction-based editing with FLUX.1 Kontext.

    Args:
        model: a local diffusers folder or a Hub id.
        cache_dir: Hugging Face cache folder for downloads.
        local_dir: if set, a Hub id is downloaded into ``local_dir/<repo name>``.
        batch_size: rows per pipeline call.
        num_inference_steps: denoising steps (None: 28).
        guidance_scale: FLUX guidance (distilled; not classifier-free guidance; None: 3.5).
        num_images_per_prompt: edited images per row.
        height, width: their product is the output area; the output's shape follows the input's aspect ratio.
        seed: base seed; each output image gets its own seed derived from (seed, row key, k).
        device: "cuda", "cuda:1", "cpu" ...; default CUDA when available.
        torch_dtype: default bfloat16 on CUDA and float32 on CPU.
        max_sequence_length: T5 tokens per instruction (512 as diffusers).
        acceleration: speed and memory options (``Acceleration``); lossless speedups are on by default on CUDA.
        lora, recipe: LoRA adapters fused into the weights, and a recipe (``DiffusersEditServing``).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        cache_dir: Optional[str] = None,
        local_dir: Optional[str] = None,
        batch_size: int = 4,
        num_inference_steps: Optional[int] = None,
        guidance_scale: Optional[float] = None,
        num_images_per_prompt: int = 1,
        height: int = 1024,
        width: int = 1024,
        seed: int = 0,
        device: Optional[str] = None,
        torch_dtype: Any = None,
        max_sequence_length: int = 512,
        acceleration: Optional[Acceleration] = None,
        lora: Any = None,
        recipe: Any = None,
    ):
        super().__init__(
            model, family="FLUX-Kontext", cache_dir=cache_dir, local_dir=local_dir, batch_size=batch_size,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            num_images_per_prompt=num_images_per_prompt, height=height, width=width, seed=seed, device=device,
            torch_dtype=torch_dtype, max_sequence_length=max_sequence_length, acceleration=acceleration,
            lora=lora, recipe=recipe,
        )

    def prime_prompt(self, prompt: str, prompt_embeds: Any, pooled_prompt_embeds: Any) -> None:
        """Give the embeddings of ``prompt`` directly, so the text encoders never run for it (benchmarks)."""
        self._embeddings[(prompt, ())] = (prompt_embeds, pooled_prompt_embeds)

    def _encode(self, prompts: Sequence[str]):
        """Prompt embeddings for each prompt, running the text encoders once per distinct prompt."""
        torch = self._torch
        pairs = [self._embedding(prompt, [], self.params()) for prompt in prompts]
        return torch.cat([e for e, _ in pairs]), torch.cat([p for _, p in pairs])
