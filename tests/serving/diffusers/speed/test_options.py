"""Speed options on the tiny Kontext model (CPU): lossless ones keep pixels, lossy ones run and are fingerprinted."""

import numpy as np
import pytest
from PIL import Image

from dataflow.core.errors import InputError
from dataflow.core.request import EditRequest
from dataflow.serving.diffusers.speed.options import Acceleration

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from dataflow.serving.diffusers.kontext_serving import FluxKontextServing  # noqa: E402
from dataflow.serving.diffusers.speed.fp8 import Fp8Linear, convert_linears_to_fp8  # noqa: E402


def edit(model, **options):
    serving = FluxKontextServing(model, num_inference_steps=3, height=64, width=64, max_sequence_length=32,
                                 acceleration=Acceleration(**options))
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    (result,) = serving.edit([EditRequest("row", image, "make it red")])
    return serving, np.asarray(result.images[0], dtype=np.float64) / 255


def parameter_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def test_fused_qkv_is_lossless_and_takes_no_extra_memory(tiny_model_dir):
    plain, base = edit(tiny_model_dir)
    serving, fused = edit(tiny_model_dir, fuse_qkv=True)
    assert any(getattr(m, "fused_projections", False) for m in serving.pipe.transformer.modules())
    assert np.abs(fused - base).max() <= 0.02
    # diffusers keeps the separate q/k/v layers beside the fused ones; they are dropped
    assert parameter_bytes(serving.pipe.transformer) == parameter_bytes(plain.pipe.transformer)


def test_fp8_replaces_the_block_linears_but_not_the_modulation_and_stays_close(tiny_model_dir):
    _, base = edit(tiny_model_dir)
    serving, fp8 = edit(tiny_model_dir, fp8=True)
    blocks = [*serving.pipe.transformer.transformer_blocks, *serving.pipe.transformer.single_transformer_blocks]
    for block in blocks:
        for name, module in block.named_modules():
            if isinstance(module, torch.nn.Linear):
                assert name.startswith("norm"), f"{name} should have been converted"
        assert isinstance(block.attn.to_out[0] if hasattr(block.attn, "to_out") else block.proj_out, Fp8Linear)
    assert fp8.shape == base.shape and np.abs(fp8 - base).max() <= 0.1
    assert serving.fingerprint()["fp8"] == "rowwise"  # the default scaling


@pytest.mark.parametrize("scaling", ["tensorwise", "rowwise"])
def test_an_fp8_layer_approximates_its_linear_layer(scaling):
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(2, 5, 64)
    holder = torch.nn.Sequential(linear)
    assert convert_linears_to_fp8(holder, scaling) == 1
    expected, got = linear(x), holder(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() / expected.abs().max() < 0.08


def test_rowwise_scales_keep_small_tokens_accurate_next_to_large_ones():
    """One token 10^6 times larger than the others: one scale for the tensor flushes the small ones to
    zero, one scale per row keeps them (at 10^5 the tensorwise error is already 39%)."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48, bias=False)
    x = torch.randn(8, 64)
    x[0] *= 1e6
    expected = linear(x)
    errors = {}
    for scaling in ("tensorwise", "rowwise"):
        got = Fp8Linear(linear, scaling)(x)
        errors[scaling] = ((got[1:] - expected[1:]).norm() / expected[1:].norm()).item()
    assert errors["rowwise"] < 0.08 and errors["tensorwise"] > 0.5


def test_first_block_cache_runs_inside_the_cache_context(tiny_model_dir):
    serving, out = edit(tiny_model_dir, first_block_cache=0.1)
    assert out.shape[1] / out.shape[0] == pytest.approx(1.5, rel=0.05)
    assert serving.fingerprint()["first_block_cache"] == 0.1


def test_first_block_cache_wraps_the_rewritten_blocks(tiny_model_dir):
    """On CUDA the rewrites are on by default: with the cache on top they must run and keep the pixels."""
    _, plain = edit(tiny_model_dir, first_block_cache=0.1)
    _, rewritten = edit(tiny_model_dir, first_block_cache=0.1, fuse_gelu=True, split_proj_out=True)
    assert np.abs(rewritten - plain).max() <= 0.02


@pytest.mark.parametrize("options, fragment", [({"offload": "disk"}, "offload must be"),
                                               ({"first_block_cache": 2.0}, "threshold in"),
                                               ({"fp8": "blockwise"}, "fp8 must be True, False or one of"),
                                               ({"cuda_graphs": True, "offload": "model"}, "combined with offload"),
                                               ({"cuda_graphs": True, "first_block_cache": 0.1}, "first_block_cache"),
                                               ({"cuda_graphs": True, "compile": False}, "compile=False")])
def test_bad_options_are_clear_errors(options, fragment):
    with pytest.raises(InputError, match=fragment):
        Acceleration(**options)


@pytest.mark.parametrize("options, plan", [
    ({}, {"scope": "blocks", "fullgraph": True}),
    ({"tune_kernels": True}, {"scope": "blocks", "fullgraph": True,
                              "options": {"coordinate_descent_tuning": True,
                                          "coordinate_descent_check_all_directions": True}}),
    ({"first_block_cache": 0.08}, None),  # its hook cannot be traced whole: no compile unless asked for
    ({"offload": "group"}, None),
    ({"first_block_cache": 0.08, "compile": True}, {"scope": "blocks", "fullgraph": False}),
    ({"compile": False}, None),
    ({"cuda_graphs": True}, {"scope": "transformer", "fullgraph": True, "mode": "reduce-overhead"}),
])
def test_compilation_on_cuda_follows_the_options(options, plan):
    assert Acceleration(**options).compile_plan(cuda=True) == plan


@pytest.mark.parametrize("options, cuda, expected", [
    ({}, True, {"fuse_qkv": True, "split_proj_out": True, "fuse_gelu": True}),  # the measured lossless defaults
    ({}, False, {"fuse_qkv": False, "split_proj_out": False, "fuse_gelu": False}),
    ({"offload": "group"}, True, {"fuse_qkv": True, "split_proj_out": False, "fuse_gelu": False}),
    ({"fuse_gelu": False, "split_proj_out": False}, True, {"fuse_qkv": True, "split_proj_out": False,
                                                            "fuse_gelu": False}),
    ({"fuse_gelu": True, "offload": "model"}, True, {"fuse_qkv": True, "split_proj_out": False, "fuse_gelu": True}),
    ({"fp8": True}, True, {"fuse_qkv": True, "split_proj_out": True, "fuse_gelu": False}),  # FP8 takes those linears
])
def test_layer_rewrites_follow_the_device_and_the_options(options, cuda, expected):
    assert Acceleration(**options).rewrites(cuda) == expected


def test_the_rewrites_that_default_on_can_be_turned_off_from_the_command_line():
    import argparse

    from dataflow.serving.diffusers.speed.options import add_acceleration_flags

    for separator in "-_":
        parser = argparse.ArgumentParser()
        add_acceleration_flags(parser, separator)
        default = Acceleration.from_flags(parser.parse_args([]))
        off = Acceleration.from_flags(parser.parse_args([f"--no{separator}fuse{separator}gelu",
                                                         f"--no{separator}split{separator}proj{separator}out"]))
        assert default.rewrites(cuda=True)["fuse_gelu"] and default.rewrites(cuda=True)["split_proj_out"]
        assert not off.rewrites(cuda=True)["fuse_gelu"] and not off.rewrites(cuda=True)["split_proj_out"]


def test_nothing_compiles_on_the_cpu_unless_asked():
    assert Acceleration().compile_plan(cuda=False) is None
    assert Acceleration(compile=True).compile_plan(cuda=False) == {"scope": "blocks", "fullgraph": True}
    assert Acceleration(cuda_graphs=True).compile_plan(cuda=False) is None


def test_first_block_cache_with_forced_compilation_runs(tiny_model_dir):
    """The cache's decision is a torch.compiler.disable'd function: fullgraph tracing fails on it, graph breaks work."""
    _, base = edit(tiny_model_dir, first_block_cache=0.1)
    _, compiled = edit(tiny_model_dir, first_block_cache=0.1, compile=True)
    assert np.abs(compiled - base).max() <= 0.02


def test_offload_without_a_gpu_warns_and_edits_as_without_it(tiny_model_dir, caplog):
    """Offloading changes layers before placement (group offload must see the final layers): same pixels."""
    _, placed = edit(tiny_model_dir, fuse_qkv=True, fp8=True)
    with caplog.at_level("WARNING", logger="dataflow"):
        _, offloaded = edit(tiny_model_dir, fuse_qkv=True, fp8=True, offload="group")
    assert "offload=group needs a CUDA device" in caplog.text
    assert np.array_equal(offloaded, placed)


def test_fused_gelu_keeps_pixels_and_parameters(tiny_model_dir):
    """Both MLP shapes are fused (FeedForward's GELU module, the single blocks' proj_mlp + act_mlp); on the CPU the
    layer computes the unfused expression, so pixels are unchanged to the bit."""
    from dataflow.serving.diffusers.speed.fused_gelu import LinearGelu

    plain, base = edit(tiny_model_dir)
    serving, fused = edit(tiny_model_dir, fuse_gelu=True)
    transformer = serving.pipe.transformer
    double, single = transformer.transformer_blocks[0], transformer.single_transformer_blocks[0]
    assert isinstance(double.ff.net[0], LinearGelu) and isinstance(double.ff_context.net[0], LinearGelu)
    assert isinstance(single.proj_mlp, LinearGelu) and isinstance(single.act_mlp, torch.nn.Identity)
    assert np.array_equal(fused, base)
    assert parameter_bytes(transformer) == parameter_bytes(plain.pipe.transformer)


def test_fused_gelu_leaves_fp8_layers_alone(tiny_model_dir):
    serving, _ = edit(tiny_model_dir, fp8=True, fuse_gelu=True)
    single = serving.pipe.transformer.single_transformer_blocks[0]
    assert isinstance(single.proj_mlp, Fp8Linear) and isinstance(single.act_mlp, torch.nn.GELU)


def test_a_fused_gelu_layer_is_its_linear_then_tanh_gelu():
    from dataflow.serving.diffusers.speed.fused_gelu import LinearGelu

    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 32)
    x = torch.randn(2, 3, 16)
    expected = torch.nn.functional.gelu(linear(x), approximate="tanh")
    assert torch.equal(LinearGelu(linear)(x), expected)


@pytest.mark.slow
def test_whole_transformer_and_vae_compiled_keep_pixels(tiny_model_dir):
    """The CUDA-graph plan on a CPU: the whole forward compiled (graphs need CUDA), outputs cloned per call."""
    _, base = edit(tiny_model_dir)
    serving, compiled = edit(tiny_model_dir, compile=True, cuda_graphs=True, compile_vae=True, fuse_gelu=True,
                             split_proj_out=True)
    assert type(serving.pipe.transformer.forward).__name__ == "GraphedForward"
    assert np.abs(compiled - base).max() <= 0.02


def test_split_output_projection_keeps_pixels_and_parameters(tiny_model_dir):
    plain, base = edit(tiny_model_dir)
    serving, split = edit(tiny_model_dir, split_proj_out=True)
    transformer = serving.pipe.transformer
    for block in transformer.single_transformer_blocks:
        assert not hasattr(block, "proj_out") and block.forward.__func__.__name__ == "split_forward"
    assert np.abs(split - base).max() <= 0.02
    assert parameter_bytes(transformer) == parameter_bytes(plain.pipe.transformer)


def test_split_output_projection_halves_become_fp8(tiny_model_dir):
    serving, _ = edit(tiny_model_dir, split_proj_out=True, fp8=True)
    block = serving.pipe.transformer.single_transformer_blocks[0]
    assert isinstance(block.proj_out_attn, Fp8Linear) and isinstance(block.proj_out_mlp, Fp8Linear)


def test_a_block_that_computes_something_else_is_left_unchanged(tiny_model_dir, caplog):
    """If a diffusers release changed the block, the check on random tokens catches it before anything changes."""
    from diffusers import FluxTransformer2DModel
    from diffusers.models.transformers.transformer_flux import (
        FluxSingleTransformerBlock,
    )

    from dataflow.serving.diffusers.speed.single_block import (
        split_single_block_projections,
    )

    class Changed(FluxSingleTransformerBlock):
        def forward(self, hidden_states, encoder_hidden_states, temb, image_rotary_emb=None,
                    joint_attention_kwargs=None):
            text, image = super().forward(hidden_states, encoder_hidden_states, temb, image_rotary_emb,
                                          joint_attention_kwargs)
            return text, image * 1.5

    transformer = FluxTransformer2DModel.from_pretrained(tiny_model_dir, subfolder="transformer")
    for block in transformer.single_transformer_blocks:
        block.__class__ = Changed
    with caplog.at_level("WARNING", logger="dataflow"):
        assert split_single_block_projections(transformer) == 0
    assert "differs from diffusers'" in caplog.text
    assert all(hasattr(block, "proj_out") for block in transformer.single_transformer_blocks)


@pytest.mark.parametrize("scaling", ["tensorwise", "rowwise"])
def test_fp8_weights_are_parameters_so_group_offload_moves_them(scaling):
    """diffusers' stream-based group offload returns parameters to the CPU after a block runs but leaves module
    buffers on the GPU; FP8 weights held as buffers stayed there (10.6 GiB peak on an H100 instead of ~2.5)."""
    layer = Fp8Linear(torch.nn.Linear(64, 48), scaling)
    assert dict(layer.named_buffers()) == {}
    params = dict(layer.named_parameters())
    assert params["weight_fp8"].dtype == torch.float8_e4m3fn and params["weight_fp8"].shape == (48, 64)
    assert not any(p.requires_grad for p in params.values())


def test_fp8_attention_and_the_cache_parse_and_enter_the_fingerprint_only_when_on(monkeypatch):
    """Runs made before these options existed keep their fingerprint: the keys appear only when an option is on."""
    import argparse

    from dataflow.serving.diffusers.speed import step_cache
    from dataflow.serving.diffusers.speed.options import add_acceleration_flags

    monkeypatch.setattr(step_cache, "missing_reason", lambda: None)  # what is recorded, with or without cache-dit
    assert Acceleration().lossy() == {"fp8": False, "first_block_cache": None}
    for separator in "-_":
        parser = argparse.ArgumentParser()
        add_acceleration_flags(parser, separator)
        options = Acceleration.from_flags(parser.parse_args([f"--fp8{separator}attention", "--cache", "dbcache"]))
        assert options.fp8_attention and options.cache == "dbcache:balanced"
        assert options.lossy() == {"fp8": False, "first_block_cache": None, "fp8_attention": True,
                                   "cache": "dbcache:balanced (F8B0 W4 MC3 R0.12)"}


@pytest.mark.parametrize("spec, fragment", [
    ("dbcache:warp", "unknown dbcache preset 'warp' in 'dbcache:warp'; choose one of quality, balanced, fast, "
                     "taylorseer, static-slow, static-medium, static-fast, static-ultra"),
    ("teacache", "unknown cache method 'teacache' in 'teacache': the only one is dbcache"),
    ("dbcache:static", "unknown dbcache preset 'static'"),
])
def test_an_unknown_cache_is_a_precise_error(spec, fragment):
    with pytest.raises(InputError, match=fragment):
        Acceleration(cache=spec)


def test_the_cache_without_cache_dit_says_what_to_install(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "cache_dit" else find_spec(name, *args))
    with pytest.raises(InputError, match=r"--cache needs cache-dit, which is not installed: pip install "
                                         r"'dataflow-edit\[cache\]'"):
        Acceleration(cache="dbcache:fast")


def test_fp8_attention_needs_a_backend_that_calls_torch_attention():
    with pytest.raises(InputError, match="attention_backend='flash' does not call"):
        Acceleration(fp8_attention=True, attention_backend="flash")
    assert Acceleration(fp8_attention=True, attention_backend="_native_cudnn").fp8_attention


def test_the_fp8_attention_kernel_is_chosen_by_name_and_recorded_in_the_fingerprint():
    """``--fp8-attention`` keeps the fingerprint it always had (the Triton kernel); cuDNN's kernel rounds
    differently, so a run on it is recorded by name and never resumes into a run of the other."""
    import argparse

    from dataflow.serving.diffusers.speed.options import add_acceleration_flags

    for separator in "-_":
        parser = argparse.ArgumentParser()
        add_acceleration_flags(parser, separator)
        chosen = Acceleration.from_flags(parser.parse_args([f"--fp8{separator}attention{separator}kernel", "cudnn"]))
        default = Acceleration.from_flags(parser.parse_args([f"--fp8{separator}attention"]))
        assert (chosen.fp8_attention_kernel, default.fp8_attention_kernel) == ("cudnn", "triton")
        assert chosen.lossy()["fp8_attention"] == "cudnn" and default.lossy()["fp8_attention"] is True
    assert Acceleration(fp8_attention="triton").lossy() == Acceleration(fp8_attention=True).lossy()
    assert Acceleration().fp8_attention_kernel is None
    with pytest.raises(InputError, match="fp8_attention must be True, False or one of triton, cudnn, got 'flash'"):
        Acceleration(fp8_attention="flash")
