"""``LocalImageGenServing``: DataFlow-MM's documented serving, kept as a thin layer over ``DiffusersEditServing``.

Only the documented keyword names live here; they are translated once into the clean core's arguments.
"""

from __future__ import annotations

from typing import Any, Optional

from dataflow.core.errors import InputError
from dataflow.serving.diffusers.kontext_serving import DEFAULT_MODEL
from dataflow.serving.diffusers.registry import FAMILIES, family_class
from dataflow.serving.diffusers.serving import DiffusersEditServing
from dataflow.serving.diffusers.speed.options import Acceleration

SUPPORTED_TASKS = ("imageedit",)
SUPPORTED_MODELS = tuple(FAMILIES)  # "FLUX-Kontext", "Qwen-Image-Edit", "FLUX.2", "LongCat-Image-Edit", ...


class LocalImageGenServing(DiffusersEditServing):
    """Image editing with a local diffusers model, under DataFlow-MM's argument names.

    Args:
        image_io: an ``ImageIO`` whose ``save_path`` receives the edited images.
        hf_model_name_or_path: a local diffusers folder or a Hub id (default FLUX.1-Kontext-dev).
        hf_cache_dir: Hugging Face cache folder for downloads.
        hf_local_dir: a Hub id is downloaded into ``hf_local_dir/<repo name>``.
        Image_gen_task: only "imageedit" is supported.
        batch_size: rows per batch.
        diffuser_model_name: "FLUX-Kontext", "Qwen-Image-Edit" (Edit, 2509, 2511), "FLUX.2" ([dev], [klein]),
            "LongCat-Image-Edit" (and Turbo), "Qwen-Image-2.1" or "JoyAI-Image-Edit" (and Plus); the folder's
            pipeline must belong to it (the exact pipeline class is read from ``model_index.json``): a local folder
            of another family is refused here, naming both.
        diffuser_image_height, diffuser_image_width: their product is the output area; each output keeps its
            (first) input's aspect ratio.
        diffuser_num_inference_steps, diffuser_guidance_scale, diffuser_num_images_per_prompt: as in diffusers;
            steps and guidance left unset take the family's defaults (docs/backends.md).
        negative_prompt, true_cfg_scale: true classifier-free guidance of Qwen-Image-Edit (defaults " " and 4.0) and
            Qwen-Image-2.1 (defaults " " and 1.0: off).
        seed: base seed for reproducible rows.
        device, torch_dtype: override the defaults (CUDA with bfloat16 when available, else CPU with float32).
        max_sequence_length: text tokens per instruction (None: the family's).
        acceleration: speed and memory options (``dataflow.serving.diffusers.speed.options.Acceleration``).
        lora: LoRA adapters fused into the weights when the model loads: ``"PATH_OR_ID[@FILE][:SCALE]"`` strings
            (a local ``.safetensors`` file or folder, or a Hub repository and the file in it; downloaded like the
            model, into ``hf_local_dir``), or a list of them.
        recipe: a recipe file or a shipped recipe's name: LoRAs, scheduler, steps and guidance in one go
            (docs/backends.md); the arguments given here win over its values.
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
        diffuser_num_inference_steps: Optional[int] = None,
        diffuser_guidance_scale: Optional[float] = None,
        diffuser_num_images_per_prompt: int = 1,
        seed: int = 0,
        device: Optional[str] = None,
        torch_dtype: Any = None,
        acceleration: Optional[Acceleration] = None,
        negative_prompt: Optional[str] = None,
        true_cfg_scale: Optional[float] = None,
        max_sequence_length: Optional[int] = None,
        lora: Any = None,
        recipe: Any = None,
    ):
        if Image_gen_task not in SUPPORTED_TASKS:
            raise InputError(
                f"Image_gen_task={Image_gen_task!r} is not supported yet; supported: {', '.join(SUPPORTED_TASKS)}"
            )
        family_class(diffuser_model_name)  # an unknown name is refused before anything else
        if isinstance(hf_model_name_or_path, (list, tuple)):
            raise InputError(
                "hf_model_name_or_path takes one model; to use several GPUs run one worker per GPU "
                "(see docs/scaling.md)"
            )
        super().__init__(
            hf_model_name_or_path,
            family=diffuser_model_name,
            cache_dir=hf_cache_dir,
            local_dir=hf_local_dir,
            batch_size=batch_size,
            num_inference_steps=diffuser_num_inference_steps,
            guidance_scale=diffuser_guidance_scale,
            true_cfg_scale=true_cfg_scale,
            negative_prompt=negative_prompt,
            num_images_per_prompt=diffuser_num_images_per_prompt,
            height=diffuser_image_height,
            width=diffuser_image_width,
            seed=seed,
            device=device,
            torch_dtype=torch_dtype,
            max_sequence_length=max_sequence_length,
            acceleration=acceleration,
            lora=lora,
            recipe=recipe,
        )
        self.image_io = image_io
