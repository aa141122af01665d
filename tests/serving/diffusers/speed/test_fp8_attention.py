"""FP8 attention on the CPU: the blockwise algorithm's error against exact attention, what K smoothing buys against
an unscaled cast, the Triton kernel (in Triton's interpreter) against the torch reference, and the wiring into a
diffusers transformer. The option itself runs only on FP8 GPUs; here it must be refused."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from dataflow.core.errors import InputError  # noqa: E402
from dataflow.serving.diffusers.speed import fp8_attention, fp8_attention_math  # noqa: E402
from dataflow.serving.diffusers.speed.options import Acceleration  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The stated bound: relative L2 error of the blockwise FP8 algorithm against float32 attention, on unit-scale
# Gaussian inputs (flat attention, where the FP8 roundings of P and V average least). Measured: 0.052-0.054.
ERROR_BOUND = 0.07


def relative_l2(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def inputs(tokens=300, head_dim=64, heads=2, k_bias=0.0, seed=0):
    """Q, K, V (1, heads, tokens, head_dim); ``k_bias`` adds a per-channel offset of that scale to K, the outliers
    that smoothing removes."""
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, heads, tokens, head_dim, generator=generator) for _ in range(3))
    return q, k + k_bias * torch.randn(1, heads, 1, head_dim, generator=generator), v


def unscaled_cast_attention(q, k, v):
    """The naive alternative: Q, K and V cast to FP8 as they are (no scales, no smoothing), exact attention after."""
    return F.scaled_dot_product_attention(*(t.to(torch.float8_e4m3fn).float() for t in (q, k, v)))


@pytest.mark.parametrize("tokens, head_dim", [(300, 64), (200, 128), (129, 64)])  # partial Q and K blocks
def test_blockwise_fp8_attention_stays_within_its_bound_of_exact_attention(tokens, head_dim):
    q, k, v = inputs(tokens, head_dim)
    got = fp8_attention_math.reference_attention(q, k, v)
    assert got.shape == q.shape and got.dtype == q.dtype
    error = relative_l2(got, F.scaled_dot_product_attention(q, k, v))
    assert 0 < error < ERROR_BOUND  # lossy, but bounded


def test_smoothing_keeps_outlier_heavy_k_accurate_where_an_unscaled_cast_fails():
    """A per-channel offset 50x K's spread: every score of a row moves by the same amount, which softmax ignores.
    Smoothed, the error stays at the unbiased level; cast as it is, K's offset swamps its FP8 precision."""
    q, k, v = inputs(k_bias=50.0)
    exact = F.scaled_dot_product_attention(q, k, v)
    smoothed = relative_l2(fp8_attention_math.reference_attention(q, k, v), exact)
    unscaled = relative_l2(unscaled_cast_attention(q, k, v), exact)
    assert smoothed < ERROR_BOUND and unscaled > 0.5 and unscaled > 8 * smoothed


def test_an_offset_added_to_k_changes_the_result_only_by_rounding():
    """Smoothing subtracts the offset again; what is left (float32 rounding flipping a few FP8 roundings) is a
    small fraction of the algorithm's own error."""
    q, k, v = inputs()
    shifted = fp8_attention_math.reference_attention(q, k + 30.0 * torch.ones(1, 1, 1, k.shape[-1]), v)
    assert relative_l2(shifted, fp8_attention_math.reference_attention(q, k, v)) < ERROR_BOUND / 10


def test_scales_are_per_block_of_queries_and_keys_and_per_channel_of_v():
    """A block of huge queries gets its own scale: the other blocks keep their precision."""
    q, k, v = inputs(tokens=300)
    q[..., :fp8_attention_math.BLOCK_M, :] *= 1e4
    quantized = fp8_attention_math.quantize_inputs(q, k, v)
    assert quantized.q_scale.shape == (1, 2, 3) and quantized.k_scale.shape == (1, 2, 5)
    assert quantized.v_scale.shape == (1, 2, 64) and quantized.v_t.shape == (1, 2, 64, 300)
    assert quantized.q.dtype == quantized.k.dtype == quantized.v_t.dtype == torch.float8_e4m3fn
    rows = slice(fp8_attention_math.BLOCK_M, None)
    exact = F.scaled_dot_product_attention(q, k, v)[..., rows, :]
    assert relative_l2(fp8_attention_math.reference_attention(q, k, v)[..., rows, :], exact) < ERROR_BOUND


KERNEL_SCRIPT = """
import json, torch
from dataflow.serving.diffusers.speed.fp8_attention import reference_attention, kernel_attention
from dataflow.serving.diffusers.speed.fp8_attention_kernel import interpreting
assert interpreting()
errors = []
for tokens, head_dim, bias in ((200, 64, 0.0), (130, 128, 20.0)):
    g = torch.Generator().manual_seed(tokens)
    q, k, v = (torch.randn(1, 2, tokens, head_dim, generator=g) for _ in range(3))
    k = k + bias * torch.randn(1, 2, 1, head_dim, generator=g)
    got, want = kernel_attention(q, k, v), reference_attention(q, k, v)
    errors.append(float((got - want).norm() / want.norm()))
print(json.dumps(errors))
"""


def test_the_triton_kernel_computes_the_reference_algorithm_in_the_interpreter():
    """Run in a fresh process: Triton decides at import whether kernels are interpreted. FP8 loads and products are
    exact in the interpreter; the kernel rounds P onto the FP8 grid itself there (the interpreter's own cast does
    not round to nearest), so kernel and reference may differ only in float32 rounding."""
    pytest.importorskip("triton", reason="the kernel is written in Triton (pip install triton)")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=REPO)
    done = subprocess.run([sys.executable, "-c", KERNEL_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    assert max(errors) < 1e-5, errors


def plain_attention(arguments: dict) -> bool:
    """Every unmasked call, whatever its dtype and head size: the tiny model's heads are 16 wide, in float32."""
    return arguments["attn_mask"] is None


def test_the_transformer_attention_goes_through_fp8_and_the_vae_attention_does_not(tiny_model_dir, monkeypatch):
    from PIL import Image

    from dataflow.core.request import EditRequest
    from dataflow.serving.diffusers.kontext_serving import FluxKontextServing

    calls = []
    reference = fp8_attention.IMPLEMENTATIONS["reference"]
    monkeypatch.setitem(fp8_attention.IMPLEMENTATIONS, "reference",
                        lambda *args: calls.append(args[0].shape) or reference(*args))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))

    def edit(fp8: bool):
        serving = FluxKontextServing(tiny_model_dir, num_inference_steps=2, height=64, width=64,
                                     max_sequence_length=32)
        serving.load()
        if fp8:
            fp8_attention.use_fp8_attention(serving.pipe.transformer, "reference", accepts=plain_attention)
        (result,) = serving.edit([EditRequest("row", image, "make it red")])
        return np.asarray(result.images[0], dtype=np.float64) / 255

    exact, fp8 = edit(False), edit(True)
    transformer_blocks = 2  # one double-stream and one single-stream block, one attention call each
    assert len(calls) == 2 * transformer_blocks  # two steps; the VAE's attention stayed exact
    assert all(shape[-1] == 16 for shape in calls)
    assert not np.array_equal(fp8, exact) and np.abs(fp8 - exact).mean() < 0.05


def test_calls_the_kernel_cannot_take_stay_exact():
    q, k, v = inputs(tokens=64, head_dim=64)
    mask = torch.ones(64, 64, dtype=torch.bool)
    with fp8_attention.Fp8AttentionMode(lambda *args: pytest.fail("masked attention must not be replaced")):
        assert torch.equal(F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                           F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    bf16 = [t.bfloat16() for t in (q, k, v)]
    assert fp8_attention.takes(fp8_attention.sdpa_arguments(*bf16))
    assert not fp8_attention.takes(fp8_attention.sdpa_arguments(*bf16, is_causal=True))
    assert not fp8_attention.takes(fp8_attention.sdpa_arguments(q, k, v))  # float32: not what the kernel takes
    odd = [t[..., :48].bfloat16() for t in (q, k, v)]
    assert not fp8_attention.takes(fp8_attention.sdpa_arguments(*odd))  # head size 48


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without an FP8 GPU")
def test_the_option_is_refused_without_an_fp8_gpu(tiny_model_dir):
    from dataflow.serving.diffusers.kontext_serving import FluxKontextServing

    serving = FluxKontextServing(tiny_model_dir, num_inference_steps=2, height=64, width=64, max_sequence_length=32,
                                 acceleration=Acceleration(fp8_attention=True))
    with pytest.raises(InputError, match=r"fp8_attention \(triton kernel\) cannot run here: it needs an NVIDIA GPU "
                                         "with FP8"):
        serving.load()


# -- cuDNN's FP8 attention: one scale per tensor, smoothed K, FP8 output ------------------------------------------
# The bound for the per-tensor algorithm, as for the blockwise one above. Measured here: 0.057-0.060 (0.060 on the
# H200 for cuDNN's kernel at FLUX.1 Kontext's shape, docs/performance.md).
TENSORWISE_ERROR_BOUND = 0.075


@pytest.mark.parametrize("tokens, head_dim", [(300, 64), (200, 128), (129, 64)])
def test_per_tensor_fp8_attention_stays_within_its_bound_of_exact_attention(tokens, head_dim):
    q, k, v = inputs(tokens, head_dim)
    got = fp8_attention_math.tensorwise_reference_attention(q, k, v)
    assert got.shape == q.shape and got.dtype == q.dtype
    error = relative_l2(got, F.scaled_dot_product_attention(q, k, v))
    assert 0 < error < TENSORWISE_ERROR_BOUND


def unsmoothed_tensorwise_attention(q, k, v):
    """The per-tensor algorithm without K's smoothing: what cuDNN's kernel gives on K as it comes."""
    scales = [fp8_attention_math.tensor_scale(t) for t in (q, k, v)]
    fp8 = [fp8_attention_math.to_fp8(t, 1 / s) for t, s in zip((q, k, v), scales)]
    out = fp8_attention_math.tensorwise_core(*fp8, *(1 / s for s in scales), scales[2], q.shape[-1] ** -0.5)
    return fp8_attention_math.dequantize_output(out, scales[2], q.dtype)


@pytest.mark.parametrize("k_bias", [8.0, 50.0])
def test_smoothing_makes_one_k_scale_per_tensor_robust_to_outliers(k_bias):
    """One scale for all of K: a per-channel offset eats its FP8 range (measured on the H200: 0.22 relative L2 at 8x
    K's spread). Smoothed, the error stays at the level of inputs without outliers."""
    q, k, v = inputs(k_bias=k_bias)
    exact = F.scaled_dot_product_attention(q, k, v)
    smoothed = relative_l2(fp8_attention_math.tensorwise_reference_attention(q, k, v), exact)
    unsmoothed = relative_l2(unsmoothed_tensorwise_attention(q, k, v), exact)
    assert smoothed < TENSORWISE_ERROR_BOUND and unsmoothed > 2.5 * smoothed


def test_the_output_scale_keeps_the_fp8_output_in_range_when_one_value_dominates():
    """The output is rounded to FP8 at 448 / max|V|: attention concentrated on one huge value still fits."""
    q, k, v = inputs(tokens=130, head_dim=64)
    v[..., 7, :] = 1e3
    k[..., 7, :] = 5 * q.mean(dim=-2)  # every query attends mostly to token 7
    got = fp8_attention_math.tensorwise_reference_attention(q, k, v)
    assert torch.isfinite(got).all()
    assert relative_l2(got, F.scaled_dot_product_attention(q, k, v)) < TENSORWISE_ERROR_BOUND


def test_the_cudnn_path_computes_the_per_tensor_reference_around_one_op():
    """The torch code around the op (smoothing, scales, casts, dequantization) is the reference's; on the CPU the
    op computes the kernel's part emulated, so the whole path equals the reference."""
    from dataflow.serving.diffusers.speed.fp8_attention_cudnn import cudnn_attention

    q, k, v = (t.bfloat16() for t in inputs(tokens=200, head_dim=128))
    got = cudnn_attention(q, k, v)
    assert got.dtype == torch.bfloat16 and got.shape == q.shape
    assert torch.equal(got, fp8_attention_math.tensorwise_reference_attention(q, k, v))
    assert torch.equal(fp8_attention.IMPLEMENTATIONS["cudnn"](q, k, v, 0.1),
                       fp8_attention_math.tensorwise_reference_attention(q, k, v, 0.1))


def test_torch_compile_traces_the_quantization_and_keeps_the_cudnn_op_opaque():
    """One graph (fullgraph): the smoothing and scale computation are traced ops around one call of the custom op,
    which compilation does not look into (on a GPU it is cuDNN's kernel, which it could not trace)."""
    from dataflow.serving.diffusers.speed.fp8_attention_cudnn import cudnn_attention

    graphs = []

    def recorder(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    q, k, v = (t.bfloat16() for t in inputs(tokens=64, head_dim=64))
    torch._dynamo.reset()
    try:
        compiled = torch.compile(cudnn_attention, backend=recorder, fullgraph=True)
        assert torch.equal(compiled(q, k, v), cudnn_attention(q, k, v))
    finally:
        torch._dynamo.reset()
    (graph,) = graphs
    targets = [str(node.target) for node in graph.graph.nodes if node.op in ("call_function", "call_method")]
    assert sum(t.startswith("dataflow.cudnn_fp8_attention") for t in targets) == 1, targets
    assert any("mean" in t for t in targets) and any("amax" in t for t in targets), targets


def test_cudnn_fp8_attention_is_refused_off_hopper_with_the_reason():
    from dataflow.serving.diffusers.speed import fp8_attention_cudnn

    if not torch.cuda.is_available():
        assert "compute capability 9.0+ (Hopper, Blackwell), not cpu" in fp8_attention.unavailable_reason("cpu", "cudnn")


def test_a_missing_cudnn_frontend_is_refused_with_the_install_command(monkeypatch):
    from dataflow.serving.diffusers.speed import fp8_attention_cudnn

    monkeypatch.setitem(sys.modules, "cudnn", None)  # import cudnn raises ImportError
    assert fp8_attention_cudnn.frontend_missing() == ("it runs through NVIDIA's cuDNN frontend, which is not "
                                                      "installed (pip install nvidia-cudnn-frontend==1.16.0)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a Hopper GPU")
def test_the_cudnn_kernel_is_refused_before_the_model_is_placed(tiny_model_dir):
    from dataflow.serving.diffusers.kontext_serving import FluxKontextServing

    serving = FluxKontextServing(tiny_model_dir, num_inference_steps=2, height=64, width=64, max_sequence_length=32,
                                 acceleration=Acceleration(fp8_attention="cudnn"))
    with pytest.raises(InputError, match=r"fp8_attention \(cudnn kernel\) cannot run here: cuDNN's FP8 attention "
                                         r"needs an NVIDIA GPU of compute capability 9.0\+"):
        serving.load()
    assert serving.pipe is None


@pytest.mark.slow
@pytest.mark.parametrize("implementation", ["reference", "cudnn"])
def test_fp8_attention_runs_inside_the_compiled_blocks(tiny_model_dir, implementation):
    """Regional compilation with fullgraph=True traces the attention mode inside every block, with what runs by
    default on CUDA (fused QKV, the split projection, the cuDNN backend) and FP8 linears: the blockwise reference,
    and the cuDNN path (its custom op, emulated on the CPU, inside the compiled blocks)."""
    from PIL import Image

    from dataflow.core.request import EditRequest
    from dataflow.serving.diffusers.kontext_serving import FluxKontextServing

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    results = []
    options = dict(compile=True, fuse_qkv=True, split_proj_out=True, fp8=True)
    for fp8 in (False, True):
        backend = dict(attention_backend="_native_cudnn") if fp8 else {}  # every call is taken: cuDNN never runs
        serving = FluxKontextServing(tiny_model_dir, num_inference_steps=2, height=64, width=64,
                                     max_sequence_length=32, acceleration=Acceleration(**options, **backend))
        serving.load()
        try:
            if fp8:
                fp8_attention.use_fp8_attention(serving.pipe.transformer, implementation, accepts=plain_attention)
            (result,) = serving.edit([EditRequest("row", image, "make it red")])
        finally:  # set_attention_backend also sets diffusers' process-wide default: give the CPU back its own
            serving.pipe.transformer.set_attention_backend("native")
        results.append(np.asarray(result.images[0], dtype=np.float64) / 255)
    exact, fp8 = results
    assert not np.array_equal(fp8, exact) and np.abs(fp8 - exact).mean() < 0.05


def test_the_cudnn_ops_fake_kernel_matches_what_it_computes():
    """torch.compile plans memory from the fake kernel: shapes, dtype and layout must be the real ones."""
    from dataflow.serving.diffusers.speed.fp8_attention_math import quantize_tensorwise

    q, k, v = (t.bfloat16().transpose(1, 2).contiguous().transpose(1, 2) for t in inputs(tokens=96, head_dim=64))
    torch.library.opcheck(torch.ops.dataflow.cudnn_fp8_attention.default, (*quantize_tensorwise(q, k, v), 0.125),
                          test_utils="test_faketensor")
