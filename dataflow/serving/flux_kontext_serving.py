"""FLUX.1 Kontext editing through ``diffusers.FluxKontextPipeline``, made correct for batches.

What this adds on top of the plain pipeline:
  1. every row's output keeps its input's aspect ratio at the requested area (diffusers defaults to 1024x1024);
  2. ``bucket_key`` lets callers batch only rows of equal sizes (diffusers stretches a batch to ``image[0]``);
  3. images and prompts are expanded per output image here, because diffusers tiles them wrongly when
     ``num_images_per_prompt > 1`` is combined with several images;
  4. one CPU generator per output image, seeded from (seed, row key, k): results do not depend on batching;
  5. one text-encoder pass per distinct instruction (the embeddings are cached).
"""

from __future__ import annotations

import json
import os
import warnings
from collections import OrderedDict
from typing import Any, Optional, Sequence

from dataflow.core.errors import InputError, ModelLoadError
from dataflow.core.request import EditRequest, EditResult
from dataflow.core.seeding import image_seed
from dataflow.core.serving import ImageEditServing
from dataflow.core.validation import check_positive_int
from dataflow.logger import get_logger
from dataflow.serving.acceleration import Acceleration, denoiser_context, prepare_pipeline
from dataflow.serving.model_source import looks_like_path, resolve_model_folder
from dataflow.serving.resolution import output_size, reference_size

logger = get_logger()

DEFAULT_MODEL = "black-forest-labs/FLUX.1-Kontext-dev"
_EMBEDDING_CACHE_SIZE = 64


def vae_scale_factor(folder: str) -> int:
    """2 ** (number of VAE blocks - 1), as diffusers computes it, from ``vae/config.json``."""
    path = os.path.join(folder, "vae", "config.json")
    try:
        with open(path, encoding="utf-8") as handle:
            return 2 ** (len(json.load(handle)["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"cannot read the VAE's block_out_channels from {path}: {exc}") from None


def import_diffusers():
    """Import torch and diffusers, or explain how to install them."""
    try:
        import diffusers
        import torch
    except ImportError as exc:
        raise ModelLoadError(
            f"the flux-kontext backend needs torch and diffusers ({exc}). Install torch for your machine, then "
            "pip install 'dataflow-edit[diffusers]'; or use the classic backend, which needs neither."
        ) from None
    return torch, diffusers


class FluxKontextServing(ImageEditServing):
    """Instruction-based editing with FLUX.1 Kontext.

    Args:
        model: a local diffusers folder or a Hub id.
        cache_dir: Hugging Face cache folder for downloads.
        local_dir: if set, a Hub id is downloaded into ``local_dir/<repo name>``.
        batch_size: rows per pipeline call.
        num_inference_steps: denoising steps.
        guidance_scale: FLUX guidance (distilled; not classifier-free guidance).
        num_images_per_prompt: edited images per row.
        height, width: their product is the output area; the output's shape follows the input's aspect ratio.
        seed: base seed; each output image gets its own seed derived from (seed, row key, k).
        device: "cuda", "cuda:1", "cpu" ...; default CUDA when available.
        torch_dtype: default bfloat16 on CUDA and float32 on CPU.
        max_sequence_length: T5 tokens per instruction (512 as diffusers).
        acceleration: speed and memory options (``Acceleration``); lossless speedups are on by default on CUDA.
    """

    display_name = "FLUX.1 Kontext"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        cache_dir: Optional[str] = None,
        local_dir: Optional[str] = None,
        batch_size: int = 4,
        num_inference_steps: int = 28,
        guidance_scale: float = 3.5,
        num_images_per_prompt: int = 1,
        height: int = 1024,
        width: int = 1024,
        seed: int = 0,
        device: Optional[str] = None,
        torch_dtype: Any = None,
        max_sequence_length: int = 512,
        acceleration: Optional[Acceleration] = None,
    ):
        check_positive_int(batch_size=batch_size, num_inference_steps=num_inference_steps,
                           num_images_per_prompt=num_images_per_prompt, height=height, width=width,
                           max_sequence_length=max_sequence_length)
        if not isinstance(seed, int):
            raise InputError(f"seed must be an integer, got {seed!r}")
        self.model = model
        self.cache_dir = cache_dir
        self.local_dir = local_dir
        self.batch_size = batch_size
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = float(guidance_scale)
        self.num_images_per_request = num_images_per_prompt
        self.area = height * width
        self.seed = seed
        self.device = device
        self.torch_dtype = torch_dtype
        self.max_sequence_length = max_sequence_length
        self.acceleration = acceleration or Acceleration()
        self.pipe = None
        self._folder: Optional[str] = None
        self._multiple_of: Optional[int] = None
        self._embeddings: OrderedDict[str, tuple] = OrderedDict()

    def __getstate__(self) -> dict:
        """Pickle the configuration only: a worker process or Ray actor loads its own copy of the model."""
        state = dict(self.__dict__)
        state.update(pipe=None, _folder=None, _embeddings=OrderedDict())
        state.pop("_torch", None)
        return state

    # -- loading -----------------------------------------------------------------------------------------
    def load(self) -> None:
        """Resolve the model folder and load the pipeline onto the device (once)."""
        if self.pipe is not None:
            return
        torch, diffusers = import_diffusers()
        folder = self.model_folder()
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = self.torch_dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        logger.info("loading FLUX.1 Kontext from %s on %s (%s)", folder, device, str(dtype).replace("torch.", ""))
        try:
            with warnings.catch_warnings():  # newer diffusers renamed torch_dtype to dtype; both still work
                warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
                pipe = diffusers.FluxKontextPipeline.from_pretrained(folder, torch_dtype=dtype)
        except Exception as exc:
            raise ModelLoadError(f"could not load a FluxKontextPipeline from {folder}: {exc}") from exc
        self.use_pipeline(pipe, device)

    def use_pipeline(self, pipe: Any, device: str) -> None:
        """Serve with an already built pipeline: eval mode, placement on ``device``, then the speedups.

        ``load`` ends here; benchmarks call it directly with a pipeline built in memory.
        """
        import torch

        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                component.eval()
        pipe.set_progress_bar_config(disable=True)
        self._multiple_of = pipe.vae_scale_factor * 2
        self.pipe, applied = prepare_pipeline(pipe, device, self.acceleration)
        logger.info("speedups: %s", ", ".join(applied) or "none")
        self._torch = torch

    def prime_prompt(self, prompt: str, prompt_embeds: Any, pooled_prompt_embeds: Any) -> None:
        """Give the embeddings of ``prompt`` directly, so the text encoders never run for it (benchmarks)."""
        self._embeddings[prompt] = (prompt_embeds, pooled_prompt_embeds)

    def check_model(self) -> Optional[str]:
        """A local folder must hold a pipeline; a Hub id is only named (checking it would download it)."""
        if os.path.isdir(os.path.expanduser(self.model)) or looks_like_path(self.model):
            resolve_model_folder(self.model)
            return None
        return f"{self.model} will be fetched from the Hugging Face Hub (or its local cache) when the run starts"

    def model_folder(self) -> str:
        """The local pipeline folder, downloading it on first use if ``model`` is a Hub id."""
        if self._folder is None:
            self._folder = resolve_model_folder(self.model, self.cache_dir, self.local_dir)
        return self._folder

    @property
    def multiple_of(self) -> int:
        """Output and reference sides must be multiples of this (VAE downsampling times the 2x2 patching).

        Read from the VAE's config, so that a driver can plan buckets without loading the model.
        """
        if self._multiple_of is None:
            self._multiple_of = 2 * vae_scale_factor(self.model_folder())
        return self._multiple_of

    def bucket_key(self, width: int, height: int) -> tuple:
        """(reference width, reference height, output width, output height) for an input of this size."""
        from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS

        multiple = self.multiple_of
        ref = reference_size(width, height, PREFERRED_KONTEXT_RESOLUTIONS, self.area, multiple)
        out = output_size(width, height, self.area, multiple)
        return ref + out

    def fingerprint(self) -> dict:
        return {
            "serving": "flux-kontext",
            "model": self.model,
            "steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "num_images_per_prompt": self.num_images_per_request,
            "area": self.area,
            "seed": self.seed,
            "max_sequence_length": self.max_sequence_length,
            **self.acceleration.lossy(),
        }

    # -- generation --------------------------------------------------------------------------------------
    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        """Edit rows that share one bucket; rows of several buckets are split into one call per bucket."""
        self.load()
        groups: dict[tuple, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(self.bucket_key(*request.image.size), []).append(i)
        results: list[Optional[EditResult]] = [None] * len(requests)
        for key, indices in groups.items():
            images = self._generate([requests[i] for i in indices], key)
            for i in indices:
                results[i] = EditResult(images=images[: requests[i].num_images])
                images = images[requests[i].num_images :]
        return results

    def _generate(self, requests: Sequence[EditRequest], key: tuple) -> list:
        """One pipeline call for requests of one bucket; returns their images, row after row."""
        from PIL import Image

        torch = self._torch
        ref_w, ref_h, out_w, out_h = key
        images, prompts, generators = [], [], []
        for request in requests:
            reference = request.image
            if reference.size != (ref_w, ref_h):
                reference = reference.resize((ref_w, ref_h), Image.LANCZOS)
            for k in range(request.num_images):
                images.append(reference)
                prompts.append(request.instruction)
                generators.append(torch.Generator("cpu").manual_seed(image_seed(self.seed, request.key, k)))
        prompt_embeds, pooled_embeds = self._encode(prompts)
        with torch.inference_mode(), denoiser_context(self.pipe, self.acceleration):
            output = self.pipe(
                image=images,
                prompt_embeds=prompt_embeds,
                pooled_prompt_embeds=pooled_embeds,
                height=out_h,
                width=out_w,
                max_area=out_h * out_w,
                _auto_resize=False,
                num_inference_steps=self.num_inference_steps,
                guidance_scale=self.guidance_scale,
                num_images_per_prompt=1,
                generator=generators,
                max_sequence_length=self.max_sequence_length,
            )
        return list(output.images)

    def _encode(self, prompts: Sequence[str]):
        """Prompt embeddings for each prompt, running the text encoders once per distinct prompt."""
        torch = self._torch
        found = {}
        for prompt in dict.fromkeys(prompts):
            if prompt in self._embeddings:
                self._embeddings.move_to_end(prompt)
            else:
                with torch.inference_mode():
                    embeds, pooled, _ = self.pipe.encode_prompt(
                        prompt=[prompt], prompt_2=None, device=self.pipe._execution_device, num_images_per_prompt=1,
                        max_sequence_length=self.max_sequence_length,
                    )
                self._embeddings[prompt] = (embeds, pooled)
            found[prompt] = self._embeddings[prompt]
            if len(self._embeddings) > _EMBEDDING_CACHE_SIZE:
                self._embeddings.popitem(last=False)
        pairs = [found[p] for p in prompts]
        return torch.cat([e for e, _ in pairs]), torch.cat([p for _, p in pairs])

    def use_device(self, device: str) -> None:
        if self.pipe is not None:
            raise RuntimeError("use_device() must be called before the model is loaded")
        self.device = device

    def release_memory(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def close(self) -> None:
        self.pipe = None
        self._embeddings.clear()
        self.release_memory()

