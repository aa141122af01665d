"""``DiffusersEditServing``: what every diffusers editing family shares, made correct for batches.

1. every output keeps its first input's aspect ratio at the requested area (diffusers: 1024x1024 or the input's size);
2. ``bucket_key`` covers the sizes that shape a call, so a call only holds rows of equal sizes;
3. one CPU generator per output image, seeded from (seed, row key, k): a row's pixels do not depend on its batch;
4. the text or vision-language encoder runs once per distinct (instruction, images) (cached embeddings);
5. parameters a caller leaves unset take a recipe's values (``recipes``), else the family's defaults
   (``Family.defaults``); those given are used as given;
6. LoRAs (``lora``) are checked against the model, fused into its weights and their layers removed, before the speed
   options (FP8, compilation) run, so a LoRA costs nothing per image and FP8 quantizes the fused weights.

The family (``family.Family``) comes from the folder's ``model_index.json``; a name given by the caller must match.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from typing import Any, Optional, Sequence

from dataflow.core.errors import InputError, ModelLoadError
from dataflow.core.request import EditRequest, EditResult
from dataflow.core.seeding import image_seed
from dataflow.core.serving import ImageEditServing
from dataflow.core.validation import check_positive_int
from dataflow.io.model_source import (
    card_license,
    folder_revision,
    looks_like_path,
    resolve_model_folder,
)
from dataflow.logger import get_logger
from dataflow.serving.diffusers.family import (
    Family,
    Row,
    image_digest,
    read_model_index,
)
from dataflow.serving.diffusers.lora import (
    LoraSpec,
    ResolvedLora,
    apply_loras,
    is_local,
    local_weights_file,
    lora_specs,
    merge_loras,
    require_peft,
    resolve_lora,
)
from dataflow.serving.diffusers.recipes import Recipe, explicit_or_recipe, load_recipe, recipe_loras
from dataflow.serving.diffusers.registry import FAMILIES, family_class, family_for_index
from dataflow.serving.diffusers.speed.apply import denoiser_context, prepare_pipeline
from dataflow.serving.diffusers.speed.options import Acceleration

logger = get_logger()

EMBEDDING_CACHE_SIZE = 64


def import_diffusers():
    """Import torch and diffusers, or explain how to install them."""
    try:
        import diffusers
        import torch
    except ImportError as exc:
        raise ModelLoadError(
            f"the diffusers backend needs torch and diffusers ({exc}). Install torch for your machine, then "
            "pip install 'dataflow-edit[diffusers]'; or use the classic backend, which needs neither."
        ) from None
    return torch, diffusers


def check_true_cfg_options(cls: type, params: dict) -> None:
    """``InputError`` when ``params`` give ``negative_prompt`` or ``true_cfg_scale`` to a family without true CFG."""
    if cls.takes_negative_prompt:
        return
    given = [k for k in ("negative_prompt", "true_cfg_scale") if params.get(k) is not None]
    if given:
        takers = " and ".join(f.display_name for f in FAMILIES.values() if f.takes_negative_prompt)
        raise InputError(f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} the true classifier-free "
                         f"guidance of {takers}; {cls.display_name} takes neither")


class DiffusersEditServing(ImageEditServing):
    """Instruction-based editing with a diffusers pipeline of a supported family.

    Args:
        model: a local diffusers folder or a Hub id.
        family: "FLUX-Kontext", "Qwen-Image-Edit", "FLUX.2", "LongCat-Image-Edit", "Qwen-Image-2.1" or
            "JoyAI-Image-Edit"; the folder must hold that family's pipeline (None: whatever supported pipeline the
            folder holds). A local folder of another family is refused when the serving is built.
        cache_dir: Hugging Face cache folder for downloads.
        local_dir: if set, a Hub id is downloaded into ``local_dir/<repo name>``.
        batch_size: rows per ``edit`` call (families that take one row per pipeline call run them in turn).
        num_inference_steps, guidance_scale: None for the family's defaults (docs/backends.md).
        true_cfg_scale, negative_prompt: true classifier-free guidance of Qwen-Image-Edit (None: 4.0 and " ";
            ``true_cfg_scale=1`` turns it off) and Qwen-Image-2.1 (None: 1.0, off). Other families refuse them.
        num_images_per_prompt: edited images per row.
        height, width: their product is the output area; the output's shape follows the first input's aspect ratio.
        seed: base seed; each output image gets its own seed derived from (seed, row key, k).
        device: "cuda", "cuda:1", "cpu" ...; default CUDA when available.
        torch_dtype: default bfloat16 on CUDA and float32 on CPU.
        max_sequence_length: text tokens per instruction (None: the family's, 512).
        acceleration: speed and memory options (``Acceleration``); those that apply to the family are used.
        lora: LoRA adapters, fused into the weights when the model loads: one or a list of
            ``"PATH_OR_ID[@FILE][:SCALE]"`` strings (a local ``.safetensors`` file or folder, or a Hub repository
            and the file in it), ``LoraSpec``s or ``{"source", "weight_name", "scale"}`` dicts.
        recipe: a recipe file or a shipped recipe's name (``recipes``): LoRAs, scheduler, steps and guidance in one
            go. Arguments given here win over its values; a LoRA given here of the same file replaces the recipe's.
    """

    # The text encoders read at most ``max_sequence_length`` tokens; a longer field is a mistake, and tokenizing
    # megabytes of it would stall the run.
    max_instruction_chars = 20_000

    def __init__(
        self,
        model: str,
        *,
        family: Optional[str] = None,
        cache_dir: Optional[str] = None,
        local_dir: Optional[str] = None,
        batch_size: int = 4,
        num_inference_steps: Optional[int] = None,
        guidance_scale: Optional[float] = None,
        true_cfg_scale: Optional[float] = None,
        negative_prompt: Optional[str] = None,
        num_images_per_prompt: int = 1,
        height: int = 1024,
        width: int = 1024,
        seed: int = 0,
        device: Optional[str] = None,
        torch_dtype: Any = None,
        max_sequence_length: Optional[int] = None,
        acceleration: Optional[Acceleration] = None,
        lora: Any = None,
        recipe: Any = None,
    ):
        self.recipe: Optional[Recipe] = None if recipe is None else load_recipe(recipe)
        num_inference_steps = explicit_or_recipe(num_inference_steps, self.recipe, "num_inference_steps")
        self.sigmas = self._recipe_sigmas(num_inference_steps)
        guidance_scale = explicit_or_recipe(guidance_scale, self.recipe, "guidance_scale")
        true_cfg_scale = explicit_or_recipe(true_cfg_scale, self.recipe, "true_cfg_scale")
        negative_prompt = explicit_or_recipe(negative_prompt, self.recipe, "negative_prompt")
        self.loras: list[LoraSpec] = merge_loras(recipe_loras(self.recipe), lora_specs(lora))
        if self.loras:  # a missing peft, or a missing or ambiguous local file, is said now, before any model loads
            require_peft()
        for spec in self.loras:
            if is_local(spec):
                local_weights_file(spec)
        self._resolved_loras: Optional[list[ResolvedLora]] = None
        check_positive_int(batch_size=batch_size, num_images_per_prompt=num_images_per_prompt, height=height,
                           width=width)
        optional = dict(num_inference_steps=num_inference_steps, max_sequence_length=max_sequence_length)
        check_positive_int(**{k: v for k, v in optional.items() if v is not None})
        if not isinstance(seed, int):
            raise InputError(f"seed must be an integer, got {seed!r}")
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise InputError(f"negative_prompt must be a string, got {negative_prompt!r}")
        self.family_name = None if family is None else family_class(family).name
        self.model = model
        self.cache_dir = cache_dir
        self.local_dir = local_dir
        self.batch_size = batch_size
        self.requested = dict(num_inference_steps=num_inference_steps,
                              guidance_scale=None if guidance_scale is None else float(guidance_scale),
                              true_cfg_scale=None if true_cfg_scale is None else float(true_cfg_scale),
                              negative_prompt=negative_prompt, max_sequence_length=max_sequence_length)
        self.num_images_per_request = num_images_per_prompt
        self.area = height * width
        self.seed = seed
        self.device = device
        self.torch_dtype = torch_dtype
        self.acceleration = acceleration or Acceleration()
        self.pipe = None
        self._folder: Optional[str] = None
        self._multiple_of: Optional[int] = None
        self._family: Optional[Family] = None
        self._embeddings: OrderedDict = OrderedDict()
        cls = None if self.family_name is None else FAMILIES[self.family_name]
        if cls is not None:
            self._check_options(cls)
        named = isinstance(model, str) and bool(model)  # no model at all is said when it is needed (load, check)
        if named and os.path.isfile(os.path.join(os.path.expanduser(model), "model_index.json")):
            self._family = self._family_of_folder()  # a folder of another family is refused now, naming both
        elif named and cls is not None and len(cls.class_names) == 1 and not self._is_local():  # a Hub id
            self._family = self._accept(cls(cls.class_names[0], source=model))

    def _recipe_sigmas(self, steps: Optional[int]) -> Optional[list]:
        """The recipe's sigmas, which fix the number of steps: an explicit other number is refused."""
        sigmas = self.recipe.sigmas if self.recipe else None
        if sigmas and steps is not None and steps != len(sigmas):
            raise InputError(f"num_inference_steps={steps} does not fit recipe {self.recipe.path}, whose schedule is "
                             f"{len(sigmas)} sigmas; leave the steps to the recipe")
        return None if sigmas is None else list(sigmas)

    def __getstate__(self) -> dict:
        """Pickle the configuration only: a worker process or Ray actor loads its own copy of the model."""
        state = dict(self.__dict__)
        state.update(pipe=None, _embeddings=OrderedDict())
        state.pop("_torch", None)
        return state

    # -- the family and its parameters ------------------------------------------------------------------
    @property
    def family(self) -> Family:
        """The adapter of the folder's pipeline (reads ``model_index.json``; a Hub id is downloaded first)."""
        if self._family is None:
            self._family = self._family_of_folder()
        return self._family

    def _family_of_folder(self) -> Family:
        folder = self.model_folder()
        family = family_for_index(read_model_index(folder), self.family_name, where=folder, source=self.model)
        self._check_options(type(family))
        return self._accept(family)

    def _check_options(self, cls: type) -> None:
        if self.recipe is not None and self.recipe.family not in (None, cls.name):
            raise InputError(f"recipe {self.recipe.path} is for {self.recipe.family}, not {cls.display_name}")
        check_true_cfg_options(cls, self.requested)

    def _accept(self, family: Family) -> Family:
        """``family`` once the recipe, if any, is checked to be made for its pipeline."""
        if self.recipe is not None:
            self.recipe.check_pipeline(family)
        return family

    def _param(self, name: str) -> Any:
        value = self.requested[name]
        if value is not None:
            return value
        if name == "max_sequence_length":
            return self.family.default_max_sequence_length
        return getattr(self.family.defaults, name)

    @staticmethod
    def _parameter(name: str) -> property:
        """A parameter's value: as given (or as set later, e.g. by a benchmark), else the family's default."""
        return property(lambda self: self._param(name), lambda self, value: self.requested.__setitem__(name, value))

    num_inference_steps = _parameter("num_inference_steps")
    guidance_scale = _parameter("guidance_scale")
    true_cfg_scale = _parameter("true_cfg_scale")
    negative_prompt = _parameter("negative_prompt")
    max_sequence_length = _parameter("max_sequence_length")

    def params(self) -> dict:
        """The values a pipeline call uses: given, or the family's defaults."""
        names = ("num_inference_steps", "guidance_scale", "true_cfg_scale", "negative_prompt", "max_sequence_length")
        values = {name: self._param(name) for name in names}
        values["true_cfg_scale"] = values["true_cfg_scale"] or 1.0
        return dict(values, area=self.area, sigmas=self.sigmas)

    @property
    def display_name(self) -> str:
        if self._family is not None:
            return self._family.display_name
        return self.family_name or "the diffusers backend"

    @property
    def max_input_images(self) -> Optional[int]:
        """The family's limit. A Hub id not downloaded yet is not fetched for it: then the family's largest limit
        applies when planning, and ``edit`` checks the exact one per row."""
        if self._family is None and self._folder is None and not self._is_local():
            cls = FAMILIES.get(self.family_name)
            limits = {"Qwen-Image-Edit": 3, "FLUX.2": 10, "Qwen-Image-2.1": 10, "JoyAI-Image-Edit": 5}
            return None if cls is None else limits.get(cls.name, 1)
        return self.family.max_input_images

    def _is_local(self) -> bool:
        return os.path.isdir(os.path.expanduser(self.model)) or looks_like_path(self.model)

    # -- loading ----------------------------------------------------------------------------------------
    def load(self) -> None:
        """Resolve the model folder, check its pipeline class, and load it onto the device (once)."""
        if self.pipe is not None:
            return
        torch, diffusers = import_diffusers()
        self._family = self._family_of_folder()
        folder = self.model_folder()
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = self.torch_dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        logger.info("loading %s from %s on %s (%s)", self.family.describe(), folder, device,
                    str(dtype).replace("torch.", ""))
        pipeline_class = getattr(diffusers, self.family.variant)
        try:
            with warnings.catch_warnings():  # newer diffusers renamed torch_dtype to dtype; both still work
                warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
                pipe = pipeline_class.from_pretrained(folder, torch_dtype=dtype)
        except Exception as exc:
            raise ModelLoadError(f"could not load a {self.family.variant} from {folder}: {exc}") from exc
        self.use_pipeline(pipe, device)

    def use_pipeline(self, pipe: Any, device: str) -> None:
        """Serve with an already built pipeline: eval mode, placement on ``device``, then the speedups.

        ``load`` ends here; benchmarks call it directly with a pipeline built in memory.
        """
        import torch

        if self._family is None or self._family.variant != type(pipe).__name__:
            index = dict(getattr(pipe, "config", {}) or {}, _class_name=type(pipe).__name__)
            self._family = self._accept(family_for_index(index, self.family_name, where="the pipeline given",
                                                         source=self.model))
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                component.eval()
        pipe.set_progress_bar_config(disable=True)
        self._multiple_of = self.family.multiple_of_pipe(pipe)
        self._adapt(pipe, device)
        self.pipe, applied = prepare_pipeline(pipe, device, self.acceleration, self.family)
        logger.info("speedups: %s", ", ".join(applied) or "none")
        self._torch = torch

    def _adapt(self, pipe: Any, device: str) -> None:
        """The recipe's scheduler, then the LoRAs fused into the (bf16) weights: before any speed option, so FP8
        quantizes the fused weights (FP8 first, then a LoRA, is what shows grid artifacts) and compilation sees
        plain linear layers."""
        if self.recipe is not None and self.recipe.scheduler is not None:
            pipe.scheduler = self.recipe.make_scheduler()
            logger.info("scheduler: %s from recipe %s", self.recipe.scheduler["class"], self.recipe.name)
        loras = self.resolved_loras()
        if not loras:
            return
        if device.startswith("cuda") and not self.acceleration.offload:
            pipe.transformer.to(device)  # fuse on the GPU: the placement that follows leaves it there
        described = apply_loras(pipe, loras, self.family)
        logger.info("LoRA fused into the weights: %s", "; ".join(described))

    def resolved_loras(self) -> list[ResolvedLora]:
        """Each LoRA's local file and identity (a Hub LoRA is downloaded on first use), once."""
        if self._resolved_loras is None:
            self._resolved_loras = [resolve_lora(spec, self.cache_dir, self.local_dir) for spec in self.loras]
        return self._resolved_loras

    def check_model(self) -> Optional[str]:
        """A local folder must hold a supported pipeline; a Hub id is only named (checking it would download it)."""
        remote = [spec.name for spec in self.loras if not is_local(spec)]
        lora_note = f"LoRA {', '.join(remote)} will be fetched from the Hugging Face Hub" if remote else None
        if self._is_local():
            resolve_model_folder(self.model)
            self._family_of_folder()
            return lora_note
        note = f"{self.model} will be fetched from the Hugging Face Hub (or its local cache) when the run starts"
        return note if lora_note is None else f"{note}; {lora_note}"

    def model_folder(self) -> str:
        """The local pipeline folder, downloading it on first use if ``model`` is a Hub id."""
        if self._folder is None:
            self._folder = resolve_model_folder(self.model, self.cache_dir, self.local_dir)
        return self._folder

    @property
    def multiple_of(self) -> int:
        """Output sides are multiples of this; read from the VAE's config, so buckets plan without the model."""
        if self._multiple_of is None:
            self._multiple_of = self.family.multiple_of(self.model_folder())
        return self._multiple_of

    def bucket_key(self, width: int, height: int) -> tuple:
        """The family's (reference size, output size) for a first image of this size."""
        return self.family.bucket_key(width, height, self.area, self.multiple_of)

    def fingerprint(self) -> dict:
        family = self.family
        lossy = self.acceleration.lossy()
        common = {"model": self.model, "steps": self.num_inference_steps, "guidance_scale": self.guidance_scale,
                  "num_images_per_prompt": self.num_images_per_request, "area": self.area, "seed": self.seed,
                  "max_sequence_length": self.max_sequence_length, **self._adapter_fingerprint()}
        if family.name == "FLUX-Kontext":  # as before the other families existed, so earlier runs resume
            return {"serving": "flux-kontext", **common, **lossy}
        extra = {}
        if family.takes_negative_prompt:
            extra = {"true_cfg_scale": self.true_cfg_scale, "negative_prompt": self.negative_prompt}
        return {"serving": "diffusers", "family": family.name, "pipeline": family.variant, **common, **extra,
                **lossy}

    def _adapter_fingerprint(self) -> dict:
        """Each LoRA's identity and scale, the recipe's scheduler and sigmas; nothing without them, so runs made
        before LoRAs existed resume."""
        out: dict = {}
        if self.loras:
            out["lora"] = [lora.fingerprint() for lora in self.resolved_loras()]
        if self.recipe is not None:
            out.update(self.recipe.fingerprint())
        return out

    def model_info(self) -> dict:
        """The model as named, the Hub commit of its folder (None if not downloaded from the Hub) and the licence
        its card declares ("unknown" without one), for run.json, the output rows and exports. Not part of the
        fingerprint: the card does not change the pixels."""
        folder = self.model_folder()
        return {"model": self.model, "revision": folder_revision(folder), **card_license(folder)}

    # -- generation -------------------------------------------------------------------------------------
    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        """Edit rows; rows of several buckets are split into one call per bucket (or per row, if the family
        takes one row per call). A row the family cannot take fails alone."""
        self.load()
        family = self.family
        results: list[Optional[EditResult]] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, request in enumerate(requests):
            error = self._row_error(request)
            if error:
                results[i] = EditResult(error=error)
                continue
            key = (self.bucket_key(*request.image.size), tuple(image.size for image in request.more_images))
            groups.setdefault(key, []).append(i)
        for (key, _), indices in groups.items():
            step = family.rows_per_call or len(indices)
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                images = self._generate([requests[i] for i in chunk], key)
                for i in chunk:
                    results[i] = EditResult(images=images[: requests[i].num_images])
                    images = images[requests[i].num_images :]
        return results

    def _row_error(self, request: EditRequest) -> Optional[str]:
        limit = self.family.max_input_images
        if len(request.images) > limit:
            return (f"this row has {len(request.images)} images, but {self.family.describe()} takes "
                    f"{'one image' if limit == 1 else f'at most {limit} images'} per row")
        return self.family.row_error(request.images)

    def _generate(self, requests: Sequence[EditRequest], key: tuple) -> list:
        """One pipeline call for requests of one bucket; returns their images, row after row."""
        torch = self._torch
        family, params = self.family, self.params()
        negative = family.negative_prompt(params)
        rows = []
        for request in requests:
            references = family.references(request.images, key)
            rows.append(Row(
                references=references,
                embeddings=self._embedding(request.instruction, references, params),
                negative=None if negative is None else self._embedding(negative, references, params),
                generators=[torch.Generator("cpu").manual_seed(image_seed(self.seed, request.key, k))
                            for k in range(request.num_images)],
            ))
        context = denoiser_context(self.pipe, self.acceleration, family, params["num_inference_steps"])
        with torch.inference_mode(), context, family.context(self.pipe, params):
            return family.call(self.pipe, rows, key, params)

    def _embedding(self, prompt: str, references: list, params: dict) -> Any:
        """The encoder's outputs for ``prompt`` (with ``references`` when the encoder sees them), cached."""
        images = tuple(image_digest(image) for image in references) if self.family.encoder_sees_images else ()
        cache_key = (prompt, images)
        if cache_key in self._embeddings:
            self._embeddings.move_to_end(cache_key)
            return self._embeddings[cache_key]
        with self._torch.inference_mode():
            value = self.family.encode(self.pipe, prompt, references, params)
        self._embeddings[cache_key] = value
        if len(self._embeddings) > EMBEDDING_CACHE_SIZE:
            self._embeddings.popitem(last=False)
        return value

    def use_device(self, device: str) -> None:
        if self.pipe is not None:
            raise RuntimeError("use_device() must be called before the model is loaded")
        self.device = device

    def release_memory(self) -> None:
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def close(self) -> None:
        self.pipe = None
        self._embeddings.clear()
        self.release_memory()
