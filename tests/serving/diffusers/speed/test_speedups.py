"""The generic speedups on each new family, on the CPU: they apply without error and keep the pixels close.
(Speed is not measured here; the FLUX.1-only block rewrites are skipped for the other families.)"""

import numpy as np
import pytest

from dataflow.core.errors import InputError
from dataflow.core.request import EditRequest
from dataflow.serving.diffusers.speed.options import Acceleration

pytest.importorskip("diffusers")
from dataflow.serving.diffusers.registry import FAMILIES  # noqa: E402
from dataflow.serving.diffusers.serving import DiffusersEditServing  # noqa: E402
from tests.serving.diffusers.test_families import picture  # noqa: E402


def edited(model, acceleration):
    serving = DiffusersEditServing(model, num_inference_steps=2, height=96, width=96, max_sequence_length=32,
                                   acceleration=acceleration)
    (result,) = serving.edit([EditRequest("a", picture(128, 64), "make it red")])
    return serving, np.asarray(result.images[0], dtype=np.float32)


@pytest.mark.parametrize("options, tolerance", [
    (dict(fp8=True), 2.0),
    (dict(first_block_cache=0.05), 2.0),
    (dict(fuse_qkv=True, attention_backend="native"), 1.0),
])
def test_generic_speedups_apply_and_keep_pixels_close(family_model, options, tolerance):
    family, model = family_model
    if not FAMILIES[family].first_block_cache and "first_block_cache" in options:
        with pytest.raises(InputError, match=f"first_block_cache does not work with {FAMILIES[family].display_name}"):
            edited(model, Acceleration(**options))
        return
    _, plain = edited(model, Acceleration())
    serving, fast = edited(model, Acceleration(**options))
    assert np.abs(plain - fast).mean() <= tolerance
    if options.get("fp8"):
        from dataflow.serving.diffusers.speed.fp8 import Fp8Linear

        assert any(isinstance(m, Fp8Linear) for m in serving.pipe.transformer.modules())
    if options.get("fuse_qkv"):
        fused = any(getattr(m, "fused_projections", False) for m in serving.pipe.transformer.modules())
        assert fused == serving.family.fuse_qkv  # FLUX.2, LongCat fuse; Qwen's attention cannot use fused ones
