"""Speed options on the tiny Kontext model (CPU): lossless ones keep pixels, lossy ones run and are fingerprinted."""

import numpy as np
import pytest
from PIL import Image

from dataflow.core.errors import InputError
from dataflow.core.request import EditRequest
from dataflow.serving.acceleration import Acceleration

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from dataflow.serving.flux_kontext_serving import FluxKontextServing  # noqa: E402
from dataflow.serving.fp8 import Fp8Linear, convert_linears_to_fp8  # noqa: E402


def edit(model, **options):
    serving = FluxKontextServing(model, num_inference_steps=3, height=64, width=64, max_sequence_length=32,
                                 acceleration=Acceleration(**options))
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    (result,) = serving.edit([EditRequest("row", image, "make it red")])
    return serving, np.asarray(result.images[0], dtype=np.float64) / 255


def test_fused_qkv_is_lossless(tiny_model_dir):
    _, base = edit(tiny_model_dir)
    serving, fused = edit(tiny_model_dir, fuse_qkv=True)
    assert any(getattr(m, "fused_projections", False) for m in serving.pipe.transformer.modules())
    assert np.abs(fused - base).max() <= 0.02


def test_fp8_replaces_the_block_linears_and_stays_close(tiny_model_dir):
    _, base = edit(tiny_model_dir)
    serving, fp8 = edit(tiny_model_dir, fp8=True)
    layers = [m for m in serving.pipe.transformer.modules() if isinstance(m, Fp8Linear)]
    assert layers and not any(isinstance(m, torch.nn.Linear) for b in serving.pipe.transformer.transformer_blocks
                              for m in b.modules())
    assert fp8.shape == base.shape and np.abs(fp8 - base).max() <= 0.1
    assert serving.fingerprint()["fp8"] is True


def test_an_fp8_layer_approximates_its_linear_layer():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(2, 5, 64)
    holder = torch.nn.Sequential(linear)
    assert convert_linears_to_fp8(holder) == 1
    expected, got = linear(x), holder(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() / expected.abs().max() < 0.08


def test_first_block_cache_runs_inside_the_cache_context(tiny_model_dir):
    serving, out = edit(tiny_model_dir, first_block_cache=0.1)
    assert out.shape[1] / out.shape[0] == pytest.approx(1.5, rel=0.05)
    assert serving.fingerprint()["first_block_cache"] == 0.1


@pytest.mark.parametrize("options, fragment", [({"offload": "disk"}, "offload must be"),
                                               ({"first_block_cache": 2.0}, "threshold in")])
def test_bad_options_are_clear_errors(options, fragment):
    with pytest.raises(InputError, match=fragment):
        Acceleration(**options)
