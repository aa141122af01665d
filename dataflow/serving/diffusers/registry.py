"""The families by name and by pipeline class, and the check that a folder holds the family asked for."""

from __future__ import annotations

from typing import Optional

from dataflow.core.errors import InputError, ModelLoadError
from dataflow.serving.diffusers.family import Family
from dataflow.serving.diffusers.flux2 import Flux2Family
from dataflow.serving.diffusers.flux_kontext import FluxKontextFamily
from dataflow.serving.diffusers.joyai_image_edit import JoyAIImageEditFamily
from dataflow.serving.diffusers.longcat_image_edit import LongCatImageEditFamily
from dataflow.serving.diffusers.qwen_image21 import QwenImage21Family
from dataflow.serving.diffusers.qwen_image_edit import QwenImageEditFamily

FAMILIES: dict[str, type[Family]] = {cls.name: cls for cls in (
    FluxKontextFamily, QwenImageEditFamily, Flux2Family, LongCatImageEditFamily, QwenImage21Family,
    JoyAIImageEditFamily,
)}
BY_CLASS: dict[str, type[Family]] = {name: cls for cls in FAMILIES.values() for name in cls.class_names}


def family_class(name: str) -> type[Family]:
    """The family called ``name`` ("FLUX-Kontext", "Qwen-Image-Edit", "FLUX.2", ...), or ``InputError``."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise InputError(f"diffuser_model_name={name!r} is not supported yet; supported: {', '.join(FAMILIES)}") from None


def family_for_index(index: dict, expected: Optional[str] = None, where: str = "the model folder",
                     source: Optional[str] = None) -> Family:
    """The adapter for the pipeline ``model_index.json`` names; ``ModelLoadError`` naming both if it is not
    ``expected``. ``source`` is the model as the caller named it (``Family.source``)."""
    class_name = index["_class_name"]
    cls = BY_CLASS.get(class_name)
    if cls is None:
        supported = ", ".join(f"{c} ({f.name})" for c, f in BY_CLASS.items())
        raise ModelLoadError(f"{where} holds a {class_name}, which is not an editing pipeline this backend runs; "
                             f"supported: {supported}")
    if expected is not None and cls.name != expected:
        wanted = FAMILIES[expected]
        raise ModelLoadError(
            f"diffuser_model_name={expected!r} was given, but {where} holds a {class_name} ({cls.name}), not "
            f"{wanted.display_name}; pass diffuser_model_name={cls.name!r}, or a {expected} folder "
            f"({', '.join(wanted.class_names)})"
        )
    return cls(class_name, index, source)
