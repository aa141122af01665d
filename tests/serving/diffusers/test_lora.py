"""LoRA adapters on FLUX.1 Kontext, Qwen-Image-Edit-Plus and FLUX.2 [klein]: tiny LoRAs made with peft and saved
with each pipeline class's ``save_lora_weights``, loaded through the serving as users load them, offline."""

import math
import os
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from dataflow.core.errors import InputError, ModelLoadError
from dataflow.core.request import EditRequest

pytest.importorskip("diffusers")
pytest.importorskip("peft")
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from dataflow.serving.diffusers.lora import (  # noqa: E402
    LoraSpec,
    apply_loras,
    lora_specs,
    parse_lora,
    resolve_lora,
)
from dataflow.serving.diffusers.serving import DiffusersEditServing  # noqa: E402
from tests import tiny_flux2, tiny_kontext, tiny_qwen_edit  # noqa: E402
from tests.tiny_lora import save_tiny_lora, to_kohya  # noqa: E402

MODULES = {"kontext": tiny_kontext, "qwen-edit-plus": tiny_qwen_edit, "flux2-klein": tiny_flux2}
FOLDERS = {"kontext": "tiny_model_dir", "qwen-edit-plus": "tiny_qwen_edit_plus_dir",
           "flux2-klein": "tiny_flux2_klein_dir"}


@pytest.fixture(params=list(MODULES))
def family(request, tmp_path_factory):
    """(name, tiny model folder, LoRA A, LoRA B) for each family."""
    name = request.param
    folder = request.getfixturevalue(FOLDERS[name])
    loras = tmp_path_factory.mktemp(f"lora-{name}")
    first = save_tiny_lora(MODULES[name], str(loras / "a"), seed=1)
    second = save_tiny_lora(MODULES[name], str(loras / "b"), seed=2)
    return name, folder, first, second


def serving(model, **options):
    defaults = dict(num_inference_steps=2, height=64, width=64, max_sequence_length=32)
    return DiffusersEditServing(model, **{**defaults, **options})


REQUEST = EditRequest("row-1", Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64, 3), np.uint8)),
                      "make it red")


def edited(server) -> np.ndarray:
    (result,) = server.edit([REQUEST])
    assert result.ok, result.error
    return np.asarray(result.images[0], dtype=np.int16)


def tuner_layers(pipe) -> int:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(isinstance(m, BaseTunerLayer) for m in pipe.transformer.modules())


def test_a_lora_changes_the_pixels_and_scale_zero_equals_none(family):
    _, model, lora, _ = family
    base = edited(serving(model))
    with_lora = serving(model, lora=lora)
    changed = edited(with_lora)
    assert np.abs(changed - base).max() > 10
    assert tuner_layers(with_lora.pipe) == 0  # fused and unloaded: the model is the base model's shape
    assert np.array_equal(edited(serving(model, lora=f"{lora}:0")), base)


def test_fused_equals_unfused(family):
    _, model, lora, _ = family
    fused = edited(serving(model, lora=lora))
    unfused = serving(model)
    unfused.load()
    apply_loras(unfused.pipe, [resolve_lora(LoraSpec(lora))], unfused.family, fuse=False)
    assert tuner_layers(unfused.pipe) > 0
    assert np.abs(edited(unfused) - fused).max() <= 1


def test_two_loras_add_their_deltas_at_their_scales(family):
    _, model, first, second = family
    base = serving(model)
    base.load()
    both = serving(model, lora=[f"{first}:0.5", LoraSpec(second, scale=0.7)])
    pixels = edited(both)
    layer = "transformer_blocks.0.attn.to_q"
    expected = dict(base.pipe.transformer.named_modules())[layer].weight.detach().clone()
    for path, scale in ((first, 0.5), (second, 0.7)):
        weights = load_file(path)
        down, up = weights[f"transformer.{layer}.lora_A.weight"], weights[f"transformer.{layer}.lora_B.weight"]
        expected += scale * (up @ down)  # lora_alpha == rank: the delta is B @ A
    fused = dict(both.pipe.transformer.named_modules())[layer].weight.detach()
    assert torch.allclose(fused, expected, atol=1e-5)
    assert np.abs(pixels - edited(serving(model, lora=f"{first}:0.5"))).max() > 5


def test_a_lora_in_kohya_keys_loads_as_its_diffusers_original(tiny_qwen_edit_plus_dir, tmp_path):
    original = save_tiny_lora(tiny_qwen_edit, str(tmp_path / "lora"), seed=1)
    kohya = to_kohya(original, str(tmp_path / "kohya.safetensors"))
    assert not any(k.startswith("transformer.") for k in load_file(kohya))
    expected = edited(serving(tiny_qwen_edit_plus_dir, lora=original))
    assert np.abs(edited(serving(tiny_qwen_edit_plus_dir, lora=kohya)) - expected).max() <= 1


@pytest.mark.parametrize("lora_of, model, names", [
    ("kontext", "tiny_qwen_edit_plus_dir", ("FLUX.1", "Qwen-Image-Edit-2509/2511")),
    ("qwen-edit-plus", "tiny_flux2_klein_dir", ("Qwen-Image", "FLUX.2 [klein]")),
    ("flux2-klein", "tiny_model_dir", ("FLUX.2", "FLUX.1 Kontext")),
])
def test_a_lora_of_another_family_is_refused_naming_both(request, tmp_path, lora_of, model, names):
    lora = save_tiny_lora(MODULES[lora_of], str(tmp_path / "lora"))
    with pytest.raises(InputError) as error:
        serving(request.getfixturevalue(model), lora=lora).load()
    message = str(error.value)
    assert lora in message and all(name in message for name in names), message
    assert "\n" not in message


def test_a_lora_whose_keys_fit_nothing_is_refused(tiny_qwen_edit_plus_dir, tmp_path):
    lora = save_tiny_lora(tiny_qwen_edit, str(tmp_path / "lora"))
    bare = str(tmp_path / "bare.safetensors")  # no "transformer." prefix and no alpha: diffusers loads nothing
    save_file({k.removeprefix("transformer."): v for k, v in load_file(lora).items()}, bare)
    with pytest.raises(InputError, match="none of its layers is a layer of Qwen-Image-Edit") as error:
        serving(tiny_qwen_edit_plus_dir, lora=bare).load()
    assert bare in str(error.value)


@pytest.mark.parametrize("folder", ["tiny_longcat_dir", "tiny_joyai_dir"])
def test_a_family_whose_pipeline_takes_no_lora_refuses_one_in_one_line(request, folder, tmp_path):
    lora = save_tiny_lora(tiny_kontext, str(tmp_path / "lora"))
    with pytest.raises(InputError, match=r"takes no LoRA: its diffusers pipeline \(\w+Pipeline\) has no LoRA loader"):
        DiffusersEditServing(request.getfixturevalue(folder), num_inference_steps=2, height=64, width=64,
                             lora=lora).load()


def test_a_partly_fitting_lora_loads_with_a_warning_that_counts(tiny_qwen_edit_plus_dir, tmp_path, caplog):
    weights = load_file(save_tiny_lora(tiny_qwen_edit, str(tmp_path / "lora")))
    for part, shape in (("A", (4, 48)), ("B", (48, 4))):  # a block the tiny model does not have
        weights[f"transformer.transformer_blocks.7.attn.to_q.lora_{part}.weight"] = torch.zeros(shape)
    partial = str(tmp_path / "partial.safetensors")
    save_file(weights, partial)
    layers = len({key.split(".lora_")[0] for key in weights})
    with caplog.at_level("WARNING", logger="dataflow"):
        changed = edited(serving(tiny_qwen_edit_plus_dir, lora=partial))
    assert f"LoRA {partial}: 1 of its {layers} layers match no layer" in caplog.text
    assert np.abs(changed - edited(serving(tiny_qwen_edit_plus_dir))).max() > 10


def test_missing_and_ambiguous_lora_files_are_said_before_loading(tiny_qwen_edit_plus_dir, tmp_path):
    with pytest.raises(InputError, match="LoRA file not found: nope.safetensors"):
        serving(tiny_qwen_edit_plus_dir, lora="nope.safetensors")
    with pytest.raises(InputError, match=r"LoRA file not found: loras/nope\.safetensors"):
        serving(tiny_qwen_edit_plus_dir, lora="loras/nope.safetensors")  # not taken for an owner/name Hub id
    folder = tmp_path / "two"
    save_tiny_lora(tiny_qwen_edit, str(folder), weight_name="one.safetensors")
    save_tiny_lora(tiny_qwen_edit, str(folder), seed=2, weight_name="two.safetensors")
    with pytest.raises(InputError, match=r"holds 2 weight files \(one.safetensors, two.safetensors\); name one"):
        serving(tiny_qwen_edit_plus_dir, lora=str(folder))
    chosen = serving(tiny_qwen_edit_plus_dir, lora=f"{folder}@two.safetensors:0.5")
    assert chosen.resolved_loras()[0].path == str(folder / "two.safetensors")
    pickled = tmp_path / "lora.bin"
    pickled.write_bytes(b"x")
    with pytest.raises(InputError, match="only .safetensors"):
        serving(tiny_qwen_edit_plus_dir, lora=str(pickled))


def test_a_folder_with_one_lora_file_is_that_file(tiny_qwen_edit_plus_dir, tmp_path):
    path = save_tiny_lora(tiny_qwen_edit, str(tmp_path / "one"))
    from_folder = serving(tiny_qwen_edit_plus_dir, lora=str(tmp_path / "one"))
    assert from_folder.fingerprint()["lora"] == serving(tiny_qwen_edit_plus_dir, lora=path).fingerprint()["lora"]


def test_without_peft_the_error_says_what_to_install(tiny_qwen_edit_plus_dir, tmp_path, monkeypatch):
    lora = save_tiny_lora(tiny_qwen_edit, str(tmp_path / "lora"))
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now fails
    with pytest.raises(ModelLoadError, match=r"LoRA adapters need peft>=0\.17\.0: pip install 'dataflow-edit\[diffusers\]'"):
        serving(tiny_qwen_edit_plus_dir, lora=lora)


def test_the_fingerprint_holds_each_loras_content_and_scale(tiny_qwen_edit_plus_dir, tmp_path):
    first = save_tiny_lora(tiny_qwen_edit, str(tmp_path / "a"), seed=1)
    same = shutil.copy(first, tmp_path / "same.safetensors")
    other = save_tiny_lora(tiny_qwen_edit, str(tmp_path / "b"), seed=2)
    plain = serving(tiny_qwen_edit_plus_dir).fingerprint()
    assert "lora" not in plain  # runs made before LoRAs existed resume
    with_first = serving(tiny_qwen_edit_plus_dir, lora=first).fingerprint()
    assert with_first == serving(tiny_qwen_edit_plus_dir, lora=same).fingerprint()  # content, not the path
    assert with_first != serving(tiny_qwen_edit_plus_dir, lora=other).fingerprint()
    assert with_first != serving(tiny_qwen_edit_plus_dir, lora=f"{first}:0.8").fingerprint()
    assert {k: v for k, v in with_first.items() if k != "lora"} == plain


# -- the names users write ------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("style.safetensors", LoraSpec("style.safetensors")),
    ("style.safetensors:0.8", LoraSpec("style.safetensors", scale=0.8)),
    ("owner/repo", LoraSpec("owner/repo")),
    ("owner/repo@sub/file.safetensors:-0.5", LoraSpec("owner/repo", "sub/file.safetensors", -0.5)),
    ("./dir@x.safetensors", LoraSpec("./dir", "x.safetensors")),
])
def test_lora_names_parse(text, expected):
    assert parse_lora(text) == expected


def test_an_existing_path_with_at_and_colon_is_taken_whole(tmp_path):
    path = tmp_path / "me@home:v2.safetensors"
    path.write_bytes(b"")
    assert parse_lora(str(path)) == LoraSpec(str(path))


def test_lora_arguments_take_strings_specs_and_dicts():
    specs = lora_specs(["a.safetensors:0.5", LoraSpec("b.safetensors"), {"source": "o/r", "weight_name": "w.safetensors"}])
    assert specs == [LoraSpec("a.safetensors", scale=0.5), LoraSpec("b.safetensors"), LoraSpec("o/r", "w.safetensors")]
    with pytest.raises(InputError, match="scale must be a number"):
        LoraSpec("a.safetensors", scale=math.nan)
    with pytest.raises(InputError, match="takes source, weight_name and scale"):
        lora_specs({"path": "a.safetensors"})


# -- Hub LoRAs, offline through the Hub cache ----------------------------------------------------------
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root, repo: str, filename: str, source: str) -> str:
    """A Hub cache holding ``filename`` of ``repo`` at ``COMMIT``, laid out as huggingface_hub lays it out."""
    folder = os.path.join(root, "models--" + repo.replace("/", "--"))
    os.makedirs(os.path.join(folder, "refs"), exist_ok=True)
    with open(os.path.join(folder, "refs", "main"), "w") as handle:
        handle.write(COMMIT)
    target = os.path.join(folder, "snapshots", COMMIT, filename)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(source, "rb") as src, open(target, "wb") as dst:
        dst.write(src.read())
    return str(root)


def test_a_hub_lora_resolves_from_the_cache_with_repo_revision_and_file(tmp_path):
    lora = save_tiny_lora(tiny_qwen_edit, str(tmp_path / "lora"))
    cache = hub_cache(tmp_path / "hub", "someone/tiny-lora", "sub/x.safetensors", lora)
    resolved = resolve_lora(parse_lora("someone/tiny-lora@sub/x.safetensors:0.5"), cache_dir=cache)
    assert open(resolved.path, "rb").read() == open(lora, "rb").read()
    assert resolved.fingerprint() == {"repo": "someone/tiny-lora", "file": "sub/x.safetensors", "revision": COMMIT,
                                      "scale": 0.5}


def test_a_hub_lora_not_in_the_cache_offline_says_so(tmp_path):
    with pytest.raises(ModelLoadError, match="x.safetensors of someone/tiny-lora is not in the Hugging Face cache, and HF_HUB_OFFLINE forbids") as error:
        resolve_lora(LoraSpec("someone/tiny-lora", "x.safetensors"), cache_dir=str(tmp_path))
    assert "pass the local file" in str(error.value)
    with pytest.raises(ModelLoadError, match="someone/tiny-lora is not in the Hugging Face cache, and HF_HUB_OFFLINE forbids"):
        resolve_lora(LoraSpec("someone/tiny-lora"), cache_dir=str(tmp_path))  # which file: needs the listing


def test_a_lora_that_fits_only_a_few_blocks_is_refused(tiny_qwen_edit_plus_dir, tmp_path):
    """At real sizes FLUX.1, Qwen-Image and FLUX.2 [klein] 4B share attention names and sizes: a 60-block LoRA of
    another family fits the model's first blocks only. Here: attention layers for 6 blocks on a 2-block model."""
    weights = {k: v for k, v in load_file(save_tiny_lora(tiny_qwen_edit, str(tmp_path / "lora"))).items()
               if ".attn." in k and ".transformer_blocks.0." in k}
    for block in range(1, 6):
        weights.update({k.replace(".transformer_blocks.0.", f".transformer_blocks.{block}."): v.clone()
                        for k, v in list(weights.items()) if ".transformer_blocks.0." in k})
    deeper = str(tmp_path / "deeper.safetensors")
    save_file(weights, deeper)
    with pytest.raises(InputError, match=r"only 16 of its 48 layers are layers of Qwen-Image-Edit.*another model"):
        serving(tiny_qwen_edit_plus_dir, lora=deeper).load()


def test_the_documented_python_sample_with_lora_edits_every_row(tmp_path, monkeypatch, tiny_qwen_edit_plus_dir):
    from dataflow.io import ImageIO
    from dataflow.operators.core_vision import PromptedImageEditGenerator
    from dataflow.serving.local_image_gen_serving import LocalImageGenServing
    from dataflow.utils.storage import FileStorage
    from tests.conftest import edit_row, read_jsonl, write_image, write_jsonl

    lora = save_tiny_lora(tiny_qwen_edit, str(tmp_path / "relight"))
    for i, name in enumerate(("wide.png", "square.png", "tall.png")):
        write_image(tmp_path / name, *[(96, 48), (64, 64), (48, 96)][i], seed=i)
    jsonl = write_jsonl(tmp_path / "edits.jsonl", [edit_row(n, f"make it red {n}") for n in
                                                   ("wide.png", "square.png", "tall.png")])
    monkeypatch.chdir(tmp_path)
    pixels = {}
    for run, extra in (("plain", {}), ("lora", {"lora": [f"{lora}:0.8"]})):
        storage = FileStorage(first_entry_file_name=jsonl, cache_path=f"./cache_local/{run}",
                              file_name_prefix="dataflow_cache_step", cache_type="jsonl")
        serving = LocalImageGenServing(
            image_io=ImageIO(save_path=f"./cache_local/{run}"), hf_model_name_or_path=tiny_qwen_edit_plus_dir,
            Image_gen_task="imageedit", batch_size=4, diffuser_model_name="Qwen-Image-Edit",
            diffuser_num_inference_steps=2, diffuser_image_height=48, diffuser_image_width=48,
            max_sequence_length=32, **extra)
        PromptedImageEditGenerator(image_edit_serving=serving).run(
            storage=storage.step(), input_image_key="images", input_conversation_key="conversations",
            output_image_key="output_image")
        rows = read_jsonl(tmp_path / "cache_local" / run / "dataflow_cache_step_step1.jsonl")
        assert len(rows) == 3 and all(len(row["output_image"]) == 1 for row in rows)
        pixels[run] = [np.asarray(Image.open(row["output_image"][0]), dtype=np.int16) for row in rows]
    assert all(np.abs(a - b).max() > 5 for a, b in zip(pixels["plain"], pixels["lora"]))
