"""Recipes: one small JSON file that sets a model's LoRA(s), scheduler, steps and guidance in one go.

The public step-distilled LoRAs (Qwen-Image-Lightning, FLUX.2-dev-Turbo) only give their quality with the scheduler,
step count and guidance their makers trained them for; a recipe keeps those together, with where they come from and
their licence. Recipes shipped with the package live in ``recipes/`` beside this module and are named by their file
name without ``.json`` (``--recipe qwen-image-edit-2509-lightning-4step``); any other recipe is a path. Values the
caller gives explicitly win over the recipe's (see ``DiffusersEditServing``).

A recipe file::

    {"name": "...", "description": "...", "source": "where it comes from", "license": "its licence",
     "family": "Qwen-Image-Edit", "pipelines": ["QwenImageEditPlusPipeline"],
     "loras": [{"source": "owner/repo", "weight_name": "file.safetensors", "scale": 1.0}],
     "scheduler": {"class": "FlowMatchEulerDiscreteScheduler", "config": {...}},
     "num_inference_steps": 4, "true_cfg_scale": 1.0, "guidance_scale": null, "sigmas": null}

``scheduler`` replaces the pipeline's scheduler with ``class.from_config(config)`` (the config as given, not merged
with the model's); ``sigmas`` is passed to each pipeline call (then ``num_inference_steps`` is their number).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from dataflow.core.errors import InputError
from dataflow.serving.diffusers.lora import LoraSpec, lora_specs
from dataflow.serving.diffusers.registry import family_class

RECIPES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recipes")
FIELDS = {"name", "description", "source", "license", "family", "pipelines", "models", "loras", "scheduler",
          "num_inference_steps", "guidance_scale", "true_cfg_scale", "negative_prompt", "sigmas", "notes"}
REQUIRED = ("source", "license")


@dataclass(frozen=True)
class Recipe:
    """A recipe as read from its file (see the module docstring for the fields)."""

    name: str
    path: str
    source: str
    license: str
    description: str = ""
    family: Optional[str] = None
    pipelines: tuple = ()
    loras: tuple = ()
    scheduler: Optional[dict] = None
    num_inference_steps: Optional[int] = None
    guidance_scale: Optional[float] = None
    true_cfg_scale: Optional[float] = None
    negative_prompt: Optional[str] = None
    sigmas: Optional[tuple] = None
    extra: dict = field(default_factory=dict)

    def fingerprint(self) -> dict:
        """What of the recipe the LoRAs and steps do not already record: the scheduler and the sigmas."""
        out: dict = {}
        if self.scheduler is not None:
            out["scheduler"] = self.scheduler
        if self.sigmas is not None:
            out["sigmas"] = list(self.sigmas)
        return out

    def check_pipeline(self, family: Any) -> None:
        """``InputError`` when the model is not of the family (or pipeline class) this recipe was made for."""
        if self.family is not None and family.name != self.family:
            raise InputError(f"recipe {self.path} is for {self.family}, the model is {family.describe()}")
        if self.pipelines and family.variant not in self.pipelines:
            raise InputError(f"recipe {self.path} is for {', '.join(self.pipelines)}, the model is "
                             f"{family.describe()}")

    def make_scheduler(self) -> Any:
        """The recipe's scheduler, built from its config."""
        import diffusers

        return getattr(diffusers, self.scheduler["class"]).from_config(self.scheduler["config"])


def shipped_recipes() -> dict[str, str]:
    """The recipes that come with the package: {name: path}."""
    if not os.path.isdir(RECIPES_DIR):
        return {}
    return {name[: -len(".json")]: os.path.join(RECIPES_DIR, name)
            for name in sorted(os.listdir(RECIPES_DIR)) if name.endswith(".json")}


def load_recipe(name_or_path: Any) -> Recipe:
    """A ``Recipe`` from a file path or a shipped recipe's name; ``InputError`` naming the file for any problem."""
    if isinstance(name_or_path, Recipe):
        return name_or_path
    if not isinstance(name_or_path, str) or not name_or_path:
        raise InputError(f"recipe takes a file or a shipped recipe's name, got {name_or_path!r}")
    path = os.path.expanduser(name_or_path)
    if not os.path.isfile(path):
        shipped = shipped_recipes()
        if name_or_path not in shipped:
            raise InputError(f"recipe not found: {name_or_path} is neither a file nor a shipped recipe "
                             f"({', '.join(shipped) or 'none'})")
        path = shipped[name_or_path]
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read recipe {path}: {exc}") from None
    return parse_recipe(data, path)


def parse_recipe(data: Any, path: str) -> Recipe:
    """Check every field of a recipe's JSON (an unknown field is refused: a typo would silently do nothing)."""
    def bad(message: str) -> InputError:
        return InputError(f"recipe {path}: {message}")

    if not isinstance(data, dict):
        raise bad("must be a JSON object")
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise bad(f"unknown field {', '.join(unknown)} (fields: {', '.join(sorted(FIELDS))})")
    for name in REQUIRED:
        if not isinstance(data.get(name), str) or not data[name].strip():
            raise bad(f"'{name}' must say {'where it comes from' if name == 'source' else 'its licence'}")
    family = data.get("family")
    if family is not None:
        try:
            family = family_class(family).name
        except InputError as exc:
            raise bad(str(exc)) from None
    try:
        loras = tuple(lora_specs(data.get("loras")))
    except InputError as exc:
        raise bad(str(exc)) from None
    steps = data.get("num_inference_steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise bad(f"num_inference_steps must be a positive integer, got {steps!r}")
    numbers = {}
    for name in ("guidance_scale", "true_cfg_scale"):
        value = data.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise bad(f"{name} must be a number, got {value!r}")
        numbers[name] = None if value is None else float(value)
    negative = data.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        raise bad(f"negative_prompt must be a string, got {negative!r}")
    sigmas = _sigmas(data.get("sigmas"), steps, bad)
    pipelines = data.get("pipelines") or []
    if not isinstance(pipelines, list) or not all(isinstance(p, str) for p in pipelines):
        raise bad("pipelines must be a list of pipeline class names")
    return Recipe(
        name=str(data.get("name") or os.path.splitext(os.path.basename(path))[0]), path=path,
        source=data["source"], license=data["license"], description=str(data.get("description", "")),
        family=family, pipelines=tuple(pipelines), loras=loras, scheduler=_scheduler(data.get("scheduler"), bad),
        num_inference_steps=len(sigmas) if sigmas and steps is None else steps, negative_prompt=negative,
        sigmas=sigmas, extra={k: data[k] for k in ("models", "notes") if k in data}, **numbers,
    )


def _sigmas(value: Any, steps: Optional[int], bad) -> Optional[tuple]:
    if value is None:
        return None
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        raise bad("sigmas must be a list of numbers")
    if steps is not None and steps != len(value):
        raise bad(f"num_inference_steps is {steps} but there are {len(value)} sigmas")
    return tuple(float(v) for v in value)


def _scheduler(value: Any, bad) -> Optional[dict]:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"class", "config"} or not isinstance(value["config"], dict):
        raise bad('scheduler must be {"class": "<diffusers scheduler class>", "config": {...}}')
    name = value["class"]
    try:
        import diffusers
        from diffusers import SchedulerMixin
    except ImportError:  # checked again when the model loads; the serving says then what to install
        return {"class": name, "config": dict(value["config"])}
    cls = getattr(diffusers, str(name), None)
    if not isinstance(cls, type) or not issubclass(cls, SchedulerMixin):
        raise bad(f"scheduler class {name!r} is not a diffusers scheduler")
    return {"class": name, "config": dict(value["config"])}


def explicit_or_recipe(explicit: Any, recipe: Optional[Recipe], name: str) -> Any:
    """The caller's value when given, else the recipe's (None without a recipe)."""
    if explicit is not None or recipe is None:
        return explicit
    return getattr(recipe, name)


def recipe_loras(recipe: Optional[Recipe]) -> list[LoraSpec]:
    return list(recipe.loras) if recipe else []
