"""The diffusers backend on a tiny random FLUX.1 Kontext folder, loaded as users load a local model."""

import numpy as np
import pytest
from PIL import Image

from dataflow.core.errors import InputError, ModelLoadError
from dataflow.core.request import EditRequest

pytest.importorskip("diffusers")
from dataflow.serving.diffusers.kontext_serving import FluxKontextServing  # noqa: E402
from dataflow.serving.local_image_gen_serving import LocalImageGenServing  # noqa: E402

SIZES = {"wide": (200, 100), "square": (120, 120), "tall": (90, 180)}


def make_serving(model, **overrides):
    options = dict(batch_size=4, num_inference_steps=2, height=64, width=64, max_sequence_length=32)
    options.update(overrides)
    return FluxKontextServing(model, **options)


def requests_for(sizes, num_images=1):
    rng = np.random.default_rng(0)
    return [
        EditRequest(f"row-{name}", Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)),
                    f"make the {name} picture red", num_images)
        for name, (w, h) in sizes.items()
    ]


def pixels(image):
    return np.asarray(image, dtype=np.int16)


def test_each_output_keeps_its_inputs_aspect_ratio_in_one_mixed_batch(tiny_model_dir):
    serving = make_serving(tiny_model_dir)
    results = serving.edit(requests_for(SIZES))
    for (name, (w, h)), result in zip(SIZES.items(), results):
        (image,) = result.images
        out_w, out_h = image.size
        assert out_w / out_h == pytest.approx(w / h, rel=0.05), name
        assert out_w * out_h == pytest.approx(64 * 64, rel=0.1), name


def test_rows_of_different_shapes_get_different_buckets_and_equal_shapes_share_one(tiny_model_dir):
    serving = make_serving(tiny_model_dir)
    assert serving.bucket_key(200, 100) != serving.bucket_key(100, 200)
    assert serving.bucket_key(200, 100) == serving.bucket_key(400, 200)


def test_several_images_per_prompt_pair_each_row_with_its_own_image_whatever_the_batch(tiny_model_dir):
    requests = requests_for({"a": (96, 64), "b": (96, 64)}, num_images=2)
    batched = make_serving(tiny_model_dir, batch_size=2, num_images_per_prompt=2).edit(requests)
    alone = [make_serving(tiny_model_dir, batch_size=1, num_images_per_prompt=2).edit([r])[0] for r in requests]
    for together, single in zip(batched, alone):
        assert len(together.images) == len(single.images) == 2
        for x, y in zip(together.images, single.images):
            assert np.abs(pixels(x) - pixels(y)).max() <= 1
    # Two outputs of one row differ (own seeds), and the two rows differ from each other.
    assert np.abs(pixels(batched[0].images[0]) - pixels(batched[0].images[1])).max() > 10
    assert np.abs(pixels(batched[0].images[0]) - pixels(batched[1].images[0])).max() > 10


def test_results_depend_on_seed_and_row_key_not_on_position(tiny_model_dir):
    (request,) = requests_for({"a": (64, 64)})
    first = make_serving(tiny_model_dir, seed=7).edit([request])[0].images[0]
    again = make_serving(tiny_model_dir, seed=7).edit(requests_for({"z": (64, 64)}) + [request])[1].images[0]
    other_seed = make_serving(tiny_model_dir, seed=8).edit([request])[0].images[0]
    assert np.abs(pixels(first) - pixels(again)).max() <= 1
    assert np.abs(pixels(first) - pixels(other_seed)).max() > 10


def test_documented_names_map_onto_the_core(tiny_model_dir):
    serving = LocalImageGenServing(
        image_io=None, hf_model_name_or_path=tiny_model_dir, Image_gen_task="imageedit", batch_size=3,
        diffuser_model_name="FLUX-Kontext", diffuser_num_inference_steps=2, diffuser_guidance_scale=2.0,
        diffuser_num_images_per_prompt=2, diffuser_image_height=48, diffuser_image_width=96, seed=5,
    )
    assert (serving.batch_size, serving.num_inference_steps, serving.guidance_scale) == (3, 2, 2.0)
    assert (serving.num_images_per_request, serving.area, serving.seed) == (2, 48 * 96, 5)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"Image_gen_task": "text2image"}, "Image_gen_task='text2image' is not supported"),
    ({"diffuser_model_name": "FLUX"}, "diffuser_model_name='FLUX' is not supported"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"hf_model_name_or_path": ["a", "b"]}, "takes one model"),
])
def test_unsupported_options_are_clear_errors(kwargs, fragment):
    with pytest.raises(InputError, match=fragment):
        LocalImageGenServing(**kwargs)


def test_a_missing_local_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="model folder not found"):
        make_serving(str(tmp_path / "nope")).load()
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        make_serving(str(tmp_path)).load()


def test_an_unreachable_hub_id_says_to_pass_a_local_folder(tmp_path):
    # HF_HUB_OFFLINE=1 (conftest): the Hub is not contacted, exactly as on a machine without network.
    with pytest.raises(ModelLoadError, match="pass the local folder") as info:
        make_serving("black-forest-labs/FLUX.1-Kontext-dev", cache_dir=str(tmp_path)).load()
    assert "FLUX.1-Kontext-dev" in str(info.value)


def test_buckets_are_planned_without_loading_the_model_and_the_serving_pickles(tiny_model_dir):
    import pickle

    serving = make_serving(tiny_model_dir)
    assert serving.bucket_key(200, 100) == (92, 44, 90, 46) and serving.pipe is None
    serving.load()
    copy = pickle.loads(pickle.dumps(serving))
    assert copy.pipe is None and copy.bucket_key(200, 100) == serving.bucket_key(200, 100)
    (result,) = copy.edit(requests_for({"a": (64, 64)}))
    assert result.images[0].size == (64, 64)


def test_each_prompt_of_a_batch_gets_its_own_cached_embedding(tiny_model_dir):
    import torch

    serving = make_serving(tiny_model_dir)
    serving.load()

    def alone(prompt):
        with torch.inference_mode():
            embeds, pooled, _ = serving.pipe.encode_prompt(prompt=[prompt], prompt_2=None, device="cpu",
                                                           num_images_per_prompt=1, max_sequence_length=32)
        return embeds, pooled

    serving._encode(["make it red"])  # warm the cache with one prompt
    embeds, pooled = serving._encode(["make it red", "make it blue", "make it red"])
    assert embeds.shape[0] == pooled.shape[0] == 3
    assert not torch.equal(embeds[0], embeds[1]) and torch.equal(embeds[0], embeds[2])
    for row, prompt in enumerate(["make it red", "make it blue", "make it red"]):
        own_embeds, own_pooled = alone(prompt)
        assert torch.allclose(embeds[row], own_embeds[0]) and torch.allclose(pooled[row], own_pooled[0])
