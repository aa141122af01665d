"""``LocalImageGenServing``: DataFlow-MM's documented serving, kept as a thin layer over ``FluxKontextServing``.

Only the documented keyword names live here; they are translated once into the clean core's arguments.
"""

from __future__ import annotations

from typing import Any, Optional

from dataflow.core.errors import InputError
from dataflow.serving.acceleration import Acceleration
from dataflow.serving.flux_kontext_serving import DEFAULT_MODEL, FluxKontextServing

SUPPORTED_TASKS = ("imageedit",)
SUPPORTED_MODELS = ("FLUX-Kontext",)


class LocalImageGenServing(FluxKontextServing):
    """Image editing with a local diffusers model, under DataFlow-MM's argument names.

    Args:
        image_io: an ``ImageIO`` whose ``save_path`` receives the edited images.
        hf_model_name_or_path: a local diffusers folder or a Hub id (default FLUX.1-Kontext-dev).
        hf_cache_dir: Hugging Face cache folder for downloads.
        hf_local_dir: a Hub id is downloaded into ``hf_local_dir/<repo name>``.
        Image_gen_task: only "imageedit" is supported.
        batch_size: rows per pipeline call.
        diffuser_model_name: only "FLUX-Kontext" is supported.
        diffuser_image_height, diffuser_image_width: their product is the output area; each output keeps its
            input's aspect ratio.
        diffuser_num_inference_steps, diffuser_guidance_scale, diffuser_num_images_per_prompt: as in diffusers.
        seed: base seed for reproducible rows.
        device, torch_dtype: override the defaults (CUDA with bfloat16 when available, else CPU with float32).
        acceleration: speed and memory options (``dataflow.serving.acceleration.Acceleration``).
    """

    def __init__(
        self,
        image_io: Any = None,
        hf_model_name_or_path: Optional[str] = DEFAULT_MODEL,
        hf_cache_dir: Optional[str] = None,
        hf_local_dir: Optional[str] = "./ckpt/models/",
        Image_gen_task: str = "imageedit",
        batch_size: int = 4,
        diffuser_model_name: str = "FLUX-Kontext",
        diffuser_image_height: int = 1024,
        diffuser_image_width: int = 1024,
        diffuser_num_inference_steps: int = 28,
        diffuser_guidance_scale: float = 3.5,
        diffuser_num_images_per_prompt: int = 1,
        seed: int = 0,
        device: Optional[str] = None,
        torch_dtype: Any = None,
        acceleration: Optional[Acceleration] = None,
    ):
        if Image_gen_task not in SUPPORTED_TASKS:
            raise InputError(
                f"Image_gen_task={Image_gen_task!r} is not supported yet; supported: {', '.join(SUPPORTED_TASKS)}"
            )
        if diffuser_model_name not in SUPPORTED_MODELS:
            raise InputError(
                f"diffuser_model_name={diffuser_model_name!r} is not supported yet; "
                f"supported: {', '.join(SUPPORTED_MODELS)}"
            )
        if isinstance(hf_model_name_or_path, (list, tuple)):
            raise InputError(
                "hf_model_name_or_path takes one model; to use several GPUs run one worker per GPU "
                "(see docs/scaling.md)"
            )
        super().__init__(
            hf_model_name_or_path,
            cache_dir=hf_cache_dir,
            local_dir=hf_local_dir,
            batch_size=batch_size,
            num_inference_steps=diffuser_num_inference_steps,
            guidance_scale=diffuser_guidance_scale,
            num_images_per_prompt=diffuser_num_images_per_prompt,
            height=diffuser_image_height,
            width=diffuser_image_width,
            seed=seed,
            device=device,
            torch_dtype=torch_dtype,
            acceleration=acceleration,
        )
        self.image_io = image_io
