"""Recipes: the shipped files are complete and valid, and a recipe sets the scheduler, steps, guidance and LoRAs the
pipeline ends up with (seen in the pipeline's calls and its transformer's forwards), explicit arguments winning."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from dataflow.core.errors import InputError
from dataflow.core.request import EditRequest

pytest.importorskip("diffusers")
pytest.importorskip("peft")
import diffusers  # noqa: E402

from dataflow.serving.diffusers.recipes import load_recipe, shipped_recipes  # noqa: E402
from dataflow.serving.diffusers.serving import DiffusersEditServing  # noqa: E402
from tests import tiny_qwen_edit  # noqa: E402
from tests.tiny_lora import save_tiny_lora  # noqa: E402

LIGHTNING = {"class": "FlowMatchEulerDiscreteScheduler", "config": {
    "base_image_seq_len": 256, "base_shift": math.log(3), "invert_sigmas": False, "max_image_seq_len": 8192,
    "max_shift": math.log(3), "num_train_timesteps": 1000, "shift": 1.0, "shift_terminal": None,
    "stochastic_sampling": False, "time_shift_type": "exponential", "use_beta_sigmas": False,
    "use_dynamic_shifting": True, "use_exponential_sigmas": False, "use_karras_sigmas": False}}
REQUEST = EditRequest("row-1", Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64, 3), np.uint8)),
                      "make it red")


def write_recipe(path, **fields):
    body = {"source": "a test", "license": "apache-2.0", **fields}
    path.write_text(json.dumps(body))
    return str(path)


def forwards(server) -> list:
    """Load ``server`` and count its transformer's forward calls (one list entry per call)."""
    server.load()
    calls = []
    server.pipe.transformer.register_forward_hook(lambda *args: calls.append(1))
    return calls


def serving(model, **options):
    defaults = dict(height=64, width=64, max_sequence_length=32)
    return DiffusersEditServing(model, **{**defaults, **options})


@pytest.mark.parametrize("name", sorted(shipped_recipes()))
def test_each_shipped_recipe_is_complete(name):
    recipe = load_recipe(name)
    assert recipe.source.startswith("http") or "https://" in recipe.source
    assert recipe.license and recipe.family and recipe.pipelines and recipe.loras
    assert recipe.num_inference_steps in (4, 8)
    assert all(lora.weight_name.endswith(".safetensors") and lora.source.count("/") == 1 for lora in recipe.loras)
    if recipe.family == "Qwen-Image-Edit":
        assert recipe.true_cfg_scale == 1.0  # step-distilled: true CFG off
        assert recipe.scheduler == LIGHTNING  # ModelTC/Qwen-Image-Lightning's generate_with_diffusers.py
    if recipe.sigmas is not None:
        assert len(recipe.sigmas) == recipe.num_inference_steps
    if recipe.scheduler is not None:
        scheduler = getattr(diffusers, recipe.scheduler["class"]).from_config(recipe.scheduler["config"])
        assert dict(scheduler.config).items() >= recipe.scheduler["config"].items()


def test_the_shipped_recipes_are_the_public_step_distilled_loras():
    assert set(shipped_recipes()) >= {"qwen-image-edit-2509-lightning-4step", "qwen-image-edit-2509-lightning-8step",
                                      "qwen-image-edit-2511-lightning-4step", "flux2-dev-turbo-8step"}
    assert load_recipe("flux2-dev-turbo-8step").sigmas == (1.0, 0.6509, 0.4374, 0.2932, 0.1893, 0.1108, 0.0495,
                                                            0.00031)


def test_a_recipe_sets_the_scheduler_the_steps_cfg_and_its_lora(tiny_qwen_edit_plus_dir, tmp_path):
    lora = save_tiny_lora(tiny_qwen_edit, str(tmp_path / "lora"))
    recipe = write_recipe(tmp_path / "fast.json", family="Qwen-Image-Edit", loras=[{"source": lora}],
                          scheduler=LIGHTNING, num_inference_steps=3, true_cfg_scale=1.0)
    server = serving(tiny_qwen_edit_plus_dir, recipe=recipe)
    calls = forwards(server)
    (result,) = server.edit([REQUEST])
    assert result.ok, result.error
    assert len(calls) == 3  # three steps, one forward each: true CFG off
    scheduler = server.pipe.scheduler
    assert type(scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert scheduler.config.base_shift == scheduler.config.max_shift == pytest.approx(math.log(3))
    assert scheduler.config.time_shift_type == "exponential" and scheduler.config.shift_terminal is None
    with_lora = np.asarray(result.images[0], dtype=np.int16)
    without = serving(tiny_qwen_edit_plus_dir, num_inference_steps=3, true_cfg_scale=1.0).edit([REQUEST])[0]
    assert np.abs(with_lora - np.asarray(without.images[0], dtype=np.int16)).max() > 5
    fingerprint = server.fingerprint()
    assert fingerprint["steps"] == 3 and fingerprint["true_cfg_scale"] == 1.0
    assert fingerprint["scheduler"] == LIGHTNING and len(fingerprint["lora"]) == 1


def test_explicit_arguments_win_over_the_recipe(tiny_qwen_edit_plus_dir, tmp_path):
    lora = save_tiny_lora(tiny_qwen_edit, str(tmp_path / "lora"))
    recipe = write_recipe(tmp_path / "fast.json", loras=[{"source": lora, "scale": 1.0}], scheduler=LIGHTNING,
                          num_inference_steps=3, true_cfg_scale=1.0)
    server = serving(tiny_qwen_edit_plus_dir, recipe=recipe, num_inference_steps=2, true_cfg_scale=4.0,
                     lora=f"{lora}:0.5")
    calls = forwards(server)
    assert server.edit([REQUEST])[0].ok
    assert len(calls) == 4  # two steps, two forwards each (true CFG on again)
    assert [entry["scale"] for entry in server.fingerprint()["lora"]] == [0.5]  # the same file: its scale replaced


def test_a_recipes_sigmas_reach_the_scheduler(tiny_flux2_klein_dir, tmp_path):
    sigmas = [1.0, 0.7, 0.3]
    recipe = write_recipe(tmp_path / "sigmas.json", family="FLUX.2", sigmas=sigmas)
    server = serving(tiny_flux2_klein_dir, recipe=recipe)
    calls = forwards(server)
    assert server.edit([REQUEST])[0].ok
    assert len(calls) == 3 and server.num_inference_steps == 3
    assert server.pipe.scheduler.sigmas.tolist()[:3] == pytest.approx(sigmas, abs=1e-3)  # no shift on [klein]
    assert server.fingerprint()["sigmas"] == sigmas
    with pytest.raises(InputError, match="num_inference_steps=5 does not fit recipe .*3 sigmas"):
        serving(tiny_flux2_klein_dir, recipe=recipe, num_inference_steps=5)


def test_a_recipe_for_another_model_is_refused_naming_both(tiny_flux2_klein_dir, tiny_qwen_edit_dir):
    with pytest.raises(InputError, match=r"recipe .*qwen-image-edit-2509-lightning-4step.json is for "
                                         r"Qwen-Image-Edit, not FLUX.2"):
        serving(tiny_flux2_klein_dir, recipe="qwen-image-edit-2509-lightning-4step").fingerprint()
    with pytest.raises(InputError, match=r"is for QwenImageEditPlusPipeline, the model is Qwen-Image-Edit "
                                         r"\(QwenImageEditPipeline\)"):
        serving(tiny_qwen_edit_dir, recipe="qwen-image-edit-2509-lightning-4step").fingerprint()


@pytest.mark.parametrize("fields, message", [
    ({"num_inference_steps": 4, "stpes": 4}, "unknown field stpes"),
    ({"num_inference_steps": 0}, "num_inference_steps must be a positive integer"),
    ({"scheduler": {"class": "NoSuchScheduler", "config": {}}}, "'NoSuchScheduler' is not a diffusers scheduler"),
    ({"sigmas": [1.0, 0.5], "num_inference_steps": 4}, "num_inference_steps is 4 but there are 2 sigmas"),
    ({"loras": [{"path": "x.safetensors"}]}, "takes source, weight_name and scale"),
    ({"family": "SDXL"}, "not supported yet"),
])
def test_a_bad_recipe_is_refused_naming_the_file(tmp_path, fields, message):
    path = write_recipe(tmp_path / "bad.json", **fields)
    with pytest.raises(InputError, match=message) as error:
        load_recipe(path)
    assert path in str(error.value)


def test_a_recipe_without_source_or_licence_is_refused(tmp_path):
    path = tmp_path / "bare.json"
    path.write_text(json.dumps({"source": "x", "num_inference_steps": 4}))
    with pytest.raises(InputError, match="'license' must say its licence"):
        load_recipe(str(path))


def test_an_unknown_recipe_name_lists_the_shipped_ones():
    with pytest.raises(InputError, match="neither a file nor a shipped recipe .*qwen-image-edit-2509-lightning-4step"):
        load_recipe("qwen-lightning")
