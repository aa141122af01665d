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
    with pytest.raises(InputError, match="fp8_attention cannot run here: it needs an NVIDIA GPU with FP8"):
        serving.load()


def test_the_option_is_refused_for_a_family_whose_attention_it_does_not_take():
    from types import SimpleNamespace

    from dataflow.serving.diffusers.speed.apply import check_applicable

    qwen = SimpleNamespace(name="Qwen-Image-Edit", display_name="Qwen-Image-Edit")
    with pytest.raises(InputError, match="takes the attention of FLUX-Kontext, FLUX.2, not Qwen-Image-Edit"):
        check_applicable(Acceleration(fp8_attention=True), "cuda", qwen)


@pytest.mark.slow
def test_fp8_attention_runs_inside_the_compiled_blocks(tiny_model_dir):
    """Regional compilation with fullgraph=True traces the attention mode inside every block, with what runs by
    default on CUDA (fused QKV, the split projection, the cuDNN backend) and FP8 linears (the reference attention
    here; on a GPU the kernel is one custom op there)."""
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
                fp8_attention.use_fp8_attention(serving.pipe.transformer, "reference", accepts=plain_attention)
            (result,) = serving.edit([EditRequest("row", image, "make it red")])
        finally:  # set_attention_backend also sets diffusers' process-wide default: give the CPU back its own
            serving.pipe.transformer.set_attention_backend("native")
        results.append(np.asarray(result.images[0], dtype=np.float64) / 255)
    exact, fp8 = results
    assert not np.array_equal(fp8, exact) and np.abs(fp8 - exact).mean() < 0.05
