"""cache-dit's step cache on the tiny Kontext model (CPU): a threshold that never fires leaves the pixels as they
are, a fixed schedule really skips the blocks of its cached steps, every call starts the schedule afresh, and the
fingerprint records the preset."""

import argparse

import numpy as np
import pytest
from PIL import Image

from dataflow.core.errors import InputError
from dataflow.core.request import EditRequest
from dataflow.serving.diffusers.speed.apply import check_applicable
from dataflow.serving.diffusers.speed.options import (
    Acceleration,
    add_acceleration_flags,
)

pytest.importorskip("diffusers")
pytest.importorskip("cache_dit", reason="the step cache needs cache-dit (pip install 'dataflow-edit[cache]')")
from dataflow.serving.diffusers.kontext_serving import FluxKontextServing  # noqa: E402
from dataflow.serving.diffusers.speed import step_cache  # noqa: E402

STEPS = 6  # cache-dit has fixed schedules for 4, 6 and 8 or more steps


def serving_with(model, steps=STEPS, **options) -> FluxKontextServing:
    serving = FluxKontextServing(model, num_inference_steps=steps, height=64, width=64, max_sequence_length=32,
                                 acceleration=Acceleration(**options))
    serving.load()
    return serving


class BlockCalls:
    """How many times the transformer's blocks ran (forward hooks: they fire however the blocks are called)."""

    def __init__(self, transformer):
        self.count = 0
        for block in [*transformer.transformer_blocks, *transformer.single_transformer_blocks]:
            block.register_forward_hook(self.add)

    def add(self, *_):
        self.count += 1


def edit(serving) -> np.ndarray:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    (result,) = serving.edit([EditRequest("row", image, "make it red")])
    return np.asarray(result.images[0], dtype=np.float64) / 255


@pytest.fixture(scope="module")
def plain(tiny_model_dir):
    serving = serving_with(tiny_model_dir)
    calls = BlockCalls(serving.pipe.transformer)
    return edit(serving), calls.count


def test_a_threshold_the_random_weights_never_reach_leaves_the_pixels_as_they_are(tiny_model_dir, plain,
                                                                                   monkeypatch):
    """With random weights every step changes the first block's output by more than the threshold: nothing is
    cached, and cache-dit's split of the blocks computes what the plain transformer does. (The presets compute 4-8
    first blocks of FLUX's 57; the tiny model has 2, so the test adds a preset of its size.)"""
    pixels, calls = plain
    monkeypatch.setitem(step_cache.PRESETS, "tiny", step_cache.CachePreset(fn=1, warmup=2, threshold=0.12))
    serving = serving_with(tiny_model_dir, cache="dbcache:tiny")
    counter = BlockCalls(serving.pipe.transformer)
    assert np.array_equal(edit(serving), pixels)
    assert counter.count == calls and step_cache.cached_steps(serving.pipe.transformer) == []


def test_a_fixed_schedule_skips_the_blocks_of_its_cached_steps(tiny_model_dir, plain):
    pixels, calls = plain
    serving = serving_with(tiny_model_dir, cache="dbcache:static-medium")
    counter = BlockCalls(serving.pipe.transformer)
    cached = edit(serving)
    mask = step_cache.schedule_mask("medium", STEPS)
    skipped_steps = mask.count(0)
    assert skipped_steps >= 2 and step_cache.cached_steps(serving.pipe.transformer) == \
        [step for step, compute in enumerate(mask) if not compute]
    # a cached step runs the first block (Fn=1) and skips the single-stream one
    assert counter.count == calls - skipped_steps
    assert not np.array_equal(cached, pixels) and np.abs(cached - pixels).mean() < 0.1


def test_every_call_starts_the_schedule_afresh(tiny_model_dir):
    """cache-dit counts steps across calls unless its context is refreshed: two calls must cache the same steps."""
    serving = serving_with(tiny_model_dir, cache="dbcache:static-medium")
    expected = [step for step, compute in enumerate(step_cache.schedule_mask("medium", STEPS)) if not compute]
    first = edit(serving)
    assert step_cache.cached_steps(serving.pipe.transformer) == expected
    second = edit(serving)
    assert step_cache.cached_steps(serving.pipe.transformer) == expected and np.array_equal(first, second)


def test_a_call_with_other_steps_gets_the_schedule_for_its_steps(tiny_model_dir):
    serving = serving_with(tiny_model_dir, steps=8, cache="dbcache:static-fast")
    edit(serving)
    mask = step_cache.schedule_mask("fast", 8)
    assert step_cache.cached_steps(serving.pipe.transformer) == [i for i, compute in enumerate(mask) if not compute]


def test_the_fingerprint_records_the_preset_and_its_settings(tiny_model_dir):
    serving = FluxKontextServing(tiny_model_dir, acceleration=Acceleration(cache="dbcache"))
    assert serving.fingerprint()["cache"] == "dbcache:balanced (F8B0 W4 MC3 R0.12)"
    assert Acceleration(cache="DBCache:static-medium").lossy()["cache"] == \
        "dbcache:static-medium (F1B0, fixed schedule medium)"
    assert Acceleration(cache="dbcache:taylorseer").lossy()["cache"] == \
        "dbcache:taylorseer (F1B0 W4 MC4 R0.2 TaylorSeer O1)"


def test_the_flag_parses_in_both_spellings():
    for separator in "-_":
        parser = argparse.ArgumentParser()
        add_acceleration_flags(parser, separator)
        options = Acceleration.from_flags(parser.parse_args(["--cache", "dbcache:fast"]))
        assert options.cache == "dbcache:fast" and Acceleration.from_flags(parser.parse_args([])).cache is None


def test_taylorseer_gets_its_calibrator():
    configs = step_cache.cache_configs("dbcache:taylorseer", 28)
    assert configs["calibrator_config"].taylorseer_order == 1
    assert configs["cache_config"].residual_diff_threshold == 0.2
    static = step_cache.cache_configs("dbcache:static-medium", 28)["cache_config"]
    assert static.steps_computation_policy == "static" and static.steps_computation_mask.count(0) == 13


def test_a_step_count_without_a_schedule_computes_every_step(caplog):
    with caplog.at_level("WARNING", logger="dataflow"):
        assert step_cache.schedule_mask("medium", 5) == [1] * 5
    assert "no medium step schedule for 5 steps" in caplog.text


@pytest.mark.parametrize("options, fragment", [
    (dict(cache="dbcache", first_block_cache=0.1), "two step caches"),
    (dict(cache="dbcache", cuda_graphs=True), "cuda_graphs cannot be combined with cache"),
    (dict(cache="dbcache", offload="group"), "offload='group'"),
])
def test_the_cache_refuses_options_that_hook_the_same_blocks(options, fragment):
    with pytest.raises(InputError, match=fragment):
        Acceleration(**options)


def test_the_cache_is_refused_on_families_it_is_not_wired_for():
    from types import SimpleNamespace

    qwen = SimpleNamespace(name="Qwen-Image-Edit", display_name="Qwen-Image-Edit", needs_cache_context=False)
    with pytest.raises(InputError, match="wired and tested for FLUX-Kontext only, not Qwen-Image-Edit"):
        check_applicable(Acceleration(cache="dbcache"), "cpu", qwen)


def test_a_preset_that_computes_more_blocks_than_the_model_has_is_refused(tiny_model_dir):
    with pytest.raises(InputError, match="dbcache:balanced computes 8 first and 0 last blocks on every step, but "
                                         "this transformer has 2 blocks"):
        serving_with(tiny_model_dir, cache="dbcache:balanced")


def test_the_cache_keeps_regional_compilation_whole_graph():
    assert Acceleration(cache="dbcache").compile_plan(cuda=True) == {"scope": "blocks", "fullgraph": True}


@pytest.mark.slow
def test_a_fixed_schedule_runs_with_the_blocks_compiled(tiny_model_dir):
    """cache-dit calls the blocks one by one and decides between them, so each block still compiles whole."""
    serving = serving_with(tiny_model_dir, cache="dbcache:static-medium", compile=True)
    eager = serving_with(tiny_model_dir, cache="dbcache:static-medium")
    assert np.abs(edit(serving) - edit(eager)).max() <= 0.02
    assert step_cache.cached_steps(serving.pipe.transformer) == step_cache.cached_steps(eager.pipe.transformer)
