"""``diffusers_serving``: the right family's serving for a model folder or Hub id, with no family flag."""

from __future__ import annotations

import os
from typing import Any, Optional

from dataflow.serving.diffusers.family import read_model_index
from dataflow.serving.diffusers.kontext_serving import FluxKontextServing
from dataflow.serving.diffusers.registry import family_class, family_for_index
from dataflow.serving.diffusers.serving import (
    DiffusersEditServing,
    check_true_cfg_options,
)


def diffusers_serving(model: str, *, image_io: Any = None, cache_dir: Optional[str] = None,
                      local_dir: Optional[str] = None, **params: Any) -> DiffusersEditServing:
    """A serving for ``model``, of the family its ``model_index.json`` names (``_class_name``).

    A local folder is read now: FLUX.1 Kontext gets a ``FluxKontextServing``, the other families a
    ``DiffusersEditServing`` of theirs. A Hub id is not downloaded here: the serving reads the family when it first
    needs it (planning or loading), after the download. ``params`` are ``DiffusersEditServing``'s keyword
    arguments (batch_size, num_inference_steps, guidance_scale, true_cfg_scale, negative_prompt,
    num_images_per_prompt, height, width, seed, device, torch_dtype, max_sequence_length, acceleration, lora,
    recipe); those that are None take the recipe's values, else the family's defaults.
    """
    folder = os.path.expanduser(model)
    family = None
    if os.path.isfile(os.path.join(folder, "model_index.json")):
        family = family_for_index(read_model_index(folder), where=folder).name
    if family == "FLUX-Kontext":
        check_true_cfg_options(family_class(family), params)  # FluxKontextServing takes neither option
        for name in ("true_cfg_scale", "negative_prompt"):
            params.pop(name, None)
        if params.get("max_sequence_length") is None:
            params.pop("max_sequence_length", None)
        serving: DiffusersEditServing = FluxKontextServing(model, cache_dir=cache_dir, local_dir=local_dir, **params)
    else:
        serving = DiffusersEditServing(model, family=family, cache_dir=cache_dir, local_dir=local_dir, **params)
    serving.image_io = image_io
    return serving
