"""Qwen-Image-Edit (Edit and Plus), FLUX.2 [klein], LongCat-Image-Edit, Qwen-Image-2.1 and JoyAI-Image-Edit (Edit
and Plus) through the shared diffusers serving, on tiny random local folders loaded as users load them: the same
guarantees as FLUX.1 Kontext, for every family."""

import math
import re


import numpy as np
import pytest
from PIL import Image

from dataflow.core.errors import InputError, ModelLoadError
from dataflow.core.request import EditRequest

pytest.importorskip("diffusers")
from dataflow.serving.diffusers.select import diffusers_serving  # noqa: E402
from dataflow.serving.diffusers.serving import DiffusersEditServing  # noqa: E402
from dataflow.serving.local_image_gen_serving import LocalImageGenServing  # noqa: E402

SIZES = {"wide": (200, 100), "square": (120, 120), "tall": (90, 180)}
AREA = 96 * 96


def make_serving(model, **overrides):
    options = dict(batch_size=4, num_inference_steps=2, height=96, width=96, max_sequence_length=32)
    options.update(overrides)
    return DiffusersEditServing(model, **options)


def picture(w, h, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def requests_for(sizes, num_images=1):
    return [EditRequest(f"row-{name}", picture(w, h, seed=i), f"make the {name} picture red", num_images)
            for i, (name, (w, h)) in enumerate(sizes.items())]


def pixels(image):
    return np.asarray(image, dtype=np.int16)


def test_each_output_keeps_its_first_inputs_aspect_ratio_at_the_area(family_model):
    _, model = family_model
    serving = make_serving(model)
    two = EditRequest("row-two", picture(200, 100, seed=5), "make it blue", more_images=(picture(64, 96, seed=6),))
    requests = requests_for(SIZES) + ([two] if serving.max_input_images > 1 else [])
    results = serving.edit(requests)
    multiple = serving.multiple_of
    for request, result in zip(requests, results):
        assert result.ok, result.error
        (image,) = result.images
        w, h = request.image.size
        assert image.size[0] / image.size[1] == pytest.approx(w / h, rel=0.05), request.key
        # each side is the multiple of the model's size step nearest the side of the requested area
        assert abs(image.size[0] - math.sqrt(AREA * w / h)) <= multiple / 2, (request.key, image.size)
        assert abs(image.size[1] - math.sqrt(AREA * h / w)) <= multiple / 2, (request.key, image.size)


def test_buckets_cover_the_shape_and_are_planned_without_loading(family_model):
    _, model = family_model
    serving = make_serving(model)
    assert serving.bucket_key(200, 100) != serving.bucket_key(100, 200)
    assert serving.bucket_key(200, 100) == serving.bucket_key(200, 100)
    assert serving.pipe is None


def test_two_images_per_prompt_are_the_same_with_batch_size_one_and_two(family_model):
    _, model = family_model
    requests = requests_for({"a": (96, 64), "b": (96, 64)}, num_images=2)
    batched = make_serving(model, batch_size=2, num_images_per_prompt=2).edit(requests)
    alone = [make_serving(model, batch_size=1, num_images_per_prompt=2).edit([r])[0] for r in requests]
    for together, single in zip(batched, alone):
        assert len(together.images) == len(single.images) == 2
        for x, y in zip(together.images, single.images):
            assert np.abs(pixels(x) - pixels(y)).max() <= 1
    assert np.abs(pixels(batched[0].images[0]) - pixels(batched[0].images[1])).max() > 10
    assert np.abs(pixels(batched[0].images[0]) - pixels(batched[1].images[0])).max() > 10


def test_a_rows_pixels_depend_on_seed_and_key_not_on_position(family_model):
    _, model = family_model
    (request,) = requests_for({"a": (64, 64)})
    first = make_serving(model, seed=7).edit([request])[0].images[0]
    again = make_serving(model, seed=7).edit(requests_for({"z": (64, 64)}) + [request])[1].images[0]
    other_seed = make_serving(model, seed=8).edit([request])[0].images[0]
    assert np.abs(pixels(first) - pixels(again)).max() <= 1
    assert np.abs(pixels(first) - pixels(other_seed)).max() > 10


def test_the_encoder_runs_once_per_distinct_instruction_and_images(family_model):
    _, model = family_model
    serving = make_serving(model)
    serving.load()
    calls = []
    encode = serving.family.encode
    serving.family.encode = lambda pipe, prompt, refs, params: calls.append(prompt) or encode(pipe, prompt, refs, params)
    image, other = picture(64, 64, seed=1), picture(64, 64, seed=2)
    serving.edit([EditRequest("a", image, "make it red"), EditRequest("b", image.copy(), "make it red"),
                  EditRequest("c", image, "make it blue")])
    serving.edit([EditRequest("d", other, "make it red")])
    unwanted = serving.family.negative_prompt(serving.params())  # CFG's negative prompt, encoded like the rest
    negative = [] if unwanted is None else [unwanted]
    if serving.family.encoder_sees_images:  # a VLM sees the images: one pass per (text, images)
        assert calls == ["make it red"] + negative + ["make it blue", "make it red"] + negative
    else:
        assert calls == ["make it red", "make it blue"]


def test_defaults_come_from_the_family_and_given_values_are_used_as_given(tiny_qwen_edit_plus_dir,
                                                                          tiny_qwen_edit_dir, tiny_flux2_klein_dir):
    plus, edit, klein = (DiffusersEditServing(m) for m in (tiny_qwen_edit_plus_dir, tiny_qwen_edit_dir,
                                                             tiny_flux2_klein_dir))
    assert (plus.num_inference_steps, plus.true_cfg_scale, plus.negative_prompt, plus.guidance_scale) == \
        (40, 4.0, " ", None)
    assert edit.num_inference_steps == 50 and edit.max_input_images == 1 and plus.max_input_images == 3
    assert (klein.num_inference_steps, klein.guidance_scale, klein.max_input_images) == (4, 1.0, 4)
    given = DiffusersEditServing(tiny_qwen_edit_plus_dir, num_inference_steps=28, guidance_scale=3.5,
                                 true_cfg_scale=2.5, negative_prompt="blurry")
    assert (given.num_inference_steps, given.guidance_scale, given.true_cfg_scale, given.negative_prompt) == \
        (28, 3.5, 2.5, "blurry")


def test_the_newest_editors_take_their_model_cards_defaults(tiny_longcat_dir, tiny_longcat_turbo_dir,
                                                             tiny_qwen_image21_dir, tiny_joyai_dir,
                                                             tiny_joyai_plus_dir):
    longcat, turbo, qwen21, joy, plus = (DiffusersEditServing(m) for m in (
        tiny_longcat_dir, tiny_longcat_turbo_dir, tiny_qwen_image21_dir, tiny_joyai_dir, tiny_joyai_plus_dir))
    assert (longcat.num_inference_steps, longcat.guidance_scale, longcat.max_input_images) == (50, 4.5, 1)
    assert (turbo.num_inference_steps, turbo.guidance_scale) == (8, 1.0)  # the folder's name says Turbo
    assert turbo.family.describe() == "LongCat-Image-Edit-Turbo (LongCatImageEditPipeline)"
    assert (qwen21.num_inference_steps, qwen21.true_cfg_scale, qwen21.max_input_images) == (40, 1.0, 10)
    assert qwen21.family.negative_prompt(qwen21.params()) is None  # no CFG by default: one pass per step
    assert (joy.num_inference_steps, joy.guidance_scale, joy.max_input_images) == (40, 4.0, 1)
    assert (plus.num_inference_steps, plus.guidance_scale, plus.max_input_images) == (30, 4.0, 5)
    given = DiffusersEditServing(tiny_longcat_turbo_dir, num_inference_steps=12, guidance_scale=2.0)
    assert (given.num_inference_steps, given.guidance_scale) == (12, 2.0)
    assert DiffusersEditServing(tiny_qwen_image21_dir, true_cfg_scale=4.0).true_cfg_scale == 4.0
    with pytest.raises(InputError, match="LongCat-Image-Edit takes neither"):
        DiffusersEditServing(tiny_longcat_dir, negative_prompt="blurry")


def test_fingerprints_name_the_family_pipeline_and_parameters(tiny_qwen_edit_plus_dir, tiny_flux2_klein_dir):
    plus = DiffusersEditServing(tiny_qwen_edit_plus_dir).fingerprint()
    assert plus["serving"] == "diffusers" and plus["family"] == "Qwen-Image-Edit"
    assert plus["pipeline"] == "QwenImageEditPlusPipeline"
    assert (plus["steps"], plus["true_cfg_scale"], plus["negative_prompt"]) == (40, 4.0, " ")
    assert DiffusersEditServing(tiny_qwen_edit_plus_dir, true_cfg_scale=2.0).fingerprint() != plus
    klein = DiffusersEditServing(tiny_flux2_klein_dir).fingerprint()
    assert (klein["family"], klein["pipeline"], klein["steps"]) == ("FLUX.2", "Flux2KleinPipeline", 4)
    assert "true_cfg_scale" not in klein


def test_fingerprints_of_the_newest_editors_tell_their_variants_apart(tiny_longcat_dir, tiny_longcat_turbo_dir,
                                                                     tiny_qwen_image21_dir, tiny_joyai_plus_dir):
    longcat, turbo = (DiffusersEditServing(m).fingerprint() for m in (tiny_longcat_dir, tiny_longcat_turbo_dir))
    assert (longcat["family"], longcat["pipeline"], longcat["steps"], longcat["guidance_scale"]) == \
        ("LongCat-Image-Edit", "LongCatImageEditPipeline", 50, 4.5)
    assert (turbo["steps"], turbo["guidance_scale"]) == (8, 1.0)  # a run does not resume with the other model
    qwen21 = DiffusersEditServing(tiny_qwen_image21_dir).fingerprint()
    assert (qwen21["pipeline"], qwen21["steps"], qwen21["true_cfg_scale"]) == ("QwenImage21Pipeline", 40, 1.0)
    plus = DiffusersEditServing(tiny_joyai_plus_dir).fingerprint()
    assert (plus["family"], plus["pipeline"], plus["steps"]) == ("JoyAI-Image-Edit", "JoyImageEditPlusPipeline", 30)


def test_diffusers_serving_picks_the_family_from_the_folder(tiny_model_dir, tiny_qwen_edit_plus_dir,
                                                            tiny_flux2_klein_dir):
    from dataflow.serving.diffusers.kontext_serving import FluxKontextServing

    kontext = diffusers_serving(tiny_model_dir, num_inference_steps=None, guidance_scale=None,
                                max_sequence_length=None)
    assert isinstance(kontext, FluxKontextServing) and kontext.fingerprint()["serving"] == "flux-kontext"
    assert (kontext.num_inference_steps, kontext.guidance_scale) == (28, 3.5)
    assert diffusers_serving(tiny_qwen_edit_plus_dir).family.variant == "QwenImageEditPlusPipeline"
    klein = diffusers_serving(tiny_flux2_klein_dir, batch_size=2, num_inference_steps=2, height=96, width=96)
    assert klein.family.name == "FLUX.2" and klein.display_name == "FLUX.2"
    (result,) = klein.edit(requests_for({"a": (128, 64)}))
    assert result.images[0].size == (136, 68)


def test_the_documented_sample_named_for_kontext_on_a_qwen_folder_says_what_the_folder_holds(
        tmp_path, tiny_qwen_edit_plus_dir):
    from dataflow.io import ImageIO

    with pytest.raises(ModelLoadError) as refused:
        LocalImageGenServing(image_io=ImageIO(save_path=str(tmp_path)), hf_model_name_or_path=tiny_qwen_edit_plus_dir,
                             hf_cache_dir="./cache_local", hf_local_dir="./ckpt/models/", Image_gen_task="imageedit",
                             batch_size=4, diffuser_model_name="FLUX-Kontext")
    message = str(refused.value)
    assert "diffuser_model_name='FLUX-Kontext' was given" in message
    assert "holds a QwenImageEditPlusPipeline (Qwen-Image-Edit), not FLUX.1 Kontext" in message
    assert "diffuser_model_name='Qwen-Image-Edit'" in message and "block_out_channels" not in message


# every family's folder, with the folder's family and pipeline class
FOLDERS = {"tiny_model_dir": ("FLUX-Kontext", "FluxKontextPipeline"),
           "tiny_qwen_edit_plus_dir": ("Qwen-Image-Edit", "QwenImageEditPlusPipeline"),
           "tiny_flux2_klein_dir": ("FLUX.2", "Flux2KleinPipeline"),
           "tiny_longcat_dir": ("LongCat-Image-Edit", "LongCatImageEditPipeline"),
           "tiny_qwen_image21_dir": ("Qwen-Image-2.1", "QwenImage21Pipeline"),
           "tiny_joyai_plus_dir": ("JoyAI-Image-Edit", "JoyImageEditPlusPipeline")}
NAMES = sorted({family for family, _ in FOLDERS.values()})


@pytest.mark.parametrize("fixture", list(FOLDERS))
@pytest.mark.parametrize("name", NAMES)
def test_a_folder_of_another_family_is_refused_naming_both(request, fixture, name):
    family, pipeline = FOLDERS[fixture]
    folder = request.getfixturevalue(fixture)
    if name == family:
        assert LocalImageGenServing(hf_model_name_or_path=folder, diffuser_model_name=name).family.name == name
        return
    with pytest.raises(ModelLoadError, match=rf"diffuser_model_name='{re.escape(name)}' was given, but .* holds a "
                                             rf"{pipeline} \({re.escape(family)}\)"):
        LocalImageGenServing(hf_model_name_or_path=folder, diffuser_model_name=name)


def test_options_of_another_family_are_refused():
    with pytest.raises(InputError, match="negative_prompt is the true classifier-free guidance of Qwen-Image-Edit "
                                         "and Qwen-Image-2.1; FLUX.1 Kontext takes neither"):
        LocalImageGenServing(diffuser_model_name="FLUX-Kontext", negative_prompt="blurry")
    with pytest.raises(InputError, match="diffuser_model_name='Qwen' is not supported"):
        LocalImageGenServing(diffuser_model_name="Qwen")


def test_rows_with_more_images_than_the_model_takes_fail_alone(tiny_qwen_edit_dir, tiny_flux2_klein_dir):
    two = EditRequest("two", picture(64, 64), "make it red", more_images=(picture(64, 64, seed=1),))
    one = EditRequest("one", picture(64, 64), "make it red")
    results = make_serving(tiny_qwen_edit_dir).edit([two, one])
    assert "takes one image per row" in results[0].error and results[1].ok
    five = EditRequest("five", picture(64, 64), "make it red", more_images=tuple(picture(64, 64, s) for s in range(4)))
    (result,) = make_serving(tiny_flux2_klein_dir).edit([five])
    assert "at most 4 images" in result.error


@pytest.mark.parametrize("fixture, images, refusal", [
    ("tiny_longcat_dir", 2, "LongCat-Image-Edit (LongCatImageEditPipeline) takes one image per row"),
    ("tiny_joyai_dir", 2, "JoyAI-Image-Edit (JoyImageEditPipeline) takes one image per row"),
    ("tiny_joyai_plus_dir", 6, "JoyAI-Image-Edit-Plus (JoyImageEditPlusPipeline) takes at most 5 images per row"),
    ("tiny_qwen_image21_dir", 11, "Qwen-Image-2.1 (QwenImage21Pipeline) takes at most 10 images per row"),
])
def test_the_newest_editors_refuse_rows_beyond_their_limit_alone(request, fixture, images, refusal):
    serving = make_serving(request.getfixturevalue(fixture))
    serving.load = lambda: None  # the refusal comes before any model work
    many = EditRequest("many", picture(64, 64), "make it red",
                       more_images=tuple(picture(64, 64, s) for s in range(images - 1)))
    (result,) = serving.edit([many])
    assert result.error == f"this row has {images} images, but {refusal}"


def test_an_out_of_memory_batch_is_split_and_memory_released(tiny_flux2_klein_dir):
    import torch

    from dataflow.engines.worker import edit_splitting_on_oom

    serving = make_serving(tiny_flux2_klein_dir)
    serving.load()
    call, seen = serving.family.call, []

    def call_once_oom(pipe, rows, key, params):
        seen.append(len(rows))
        if len(seen) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return call(pipe, rows, key, params)

    serving.family.call = call_once_oom
    results = edit_splitting_on_oom(serving, requests_for({"a": (64, 64), "b": (64, 64)}))
    assert all(r.ok for r in results) and len(results) == 2
