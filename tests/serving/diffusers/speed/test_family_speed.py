"""Each family's speed path on the CPU, option by option: the text mask Qwen-Image-Edit drops, FP8 attention in
every family's transformer, regional compilation within the parity bound, and what each family refuses.
(Speed is measured by benchmarks/bench_families.py on a GPU; here, what each option does to the pixels.)"""

from types import SimpleNamespace

import numpy as np
import pytest

from dataflow.core.errors import InputError
from dataflow.core.request import EditRequest
from dataflow.serving.diffusers.speed.options import (
    FP8_ATTENTION_FAMILIES,
    Acceleration,
)

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from dataflow.serving.diffusers import qwen_image_edit  # noqa: E402
from dataflow.serving.diffusers.serving import DiffusersEditServing  # noqa: E402
from dataflow.serving.diffusers.speed import fp8_attention  # noqa: E402
from dataflow.serving.diffusers.speed.apply import check_applicable  # noqa: E402
from tests.serving.conftest import FAMILY_MODELS  # noqa: E402
from tests.serving.diffusers.test_families import picture  # noqa: E402

# The parity bound of the lossless options: largest pixel difference from the plain path, in levels of 255 (the
# Kontext benchmark's --tiny check allows 0.02 of full scale).
LOSSLESS_LEVELS = 0.02 * 255


def loaded(model, acceleration=None):
    serving = DiffusersEditServing(model, num_inference_steps=2, height=96, width=96, max_sequence_length=32,
                                   acceleration=acceleration or Acceleration())
    serving.load()
    return serving


def edit(serving):
    (result,) = serving.edit([EditRequest("a", picture(128, 64), "make it red")])
    assert result.ok, result.error
    return np.asarray(result.images[0], dtype=np.float32)


def record_transformer_calls(transformer) -> list:
    """The keyword arguments of every transformer forward, as the forward itself receives them (after any hook)."""
    calls = []
    forward = transformer.forward

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return forward(*args, **kwargs)

    transformer.forward = recording
    return calls


def keep_all_ones_masks(serving, monkeypatch):
    """Encode as diffusers releases before 0.37 do: an all-ones text mask is passed on, not dropped."""
    pipe = serving.pipe
    encode = pipe.encode_prompt

    def encode_keeping_the_mask(*args, **kwargs):
        embeds, mask = encode(*args, **kwargs)
        return embeds, torch.ones(embeds.shape[:2], dtype=torch.long) if mask is None else mask

    monkeypatch.setattr(pipe, "encode_prompt", encode_keeping_the_mask)


@pytest.fixture(params=["tiny_qwen_edit_plus_dir", "tiny_qwen_edit_dir"])
def qwen_model(request):
    return request.getfixturevalue(request.param)


def test_qwen_one_prompt_calls_reach_the_transformer_without_a_text_mask(qwen_model, monkeypatch):
    """Both the instruction's and the negative prompt's calls (true CFG), even where diffusers passes the all-ones
    mask on; the pixels are those of the masked call."""
    serving = loaded(qwen_model)
    keep_all_ones_masks(serving, monkeypatch)
    calls = record_transformer_calls(serving.pipe.transformer)
    unmasked = edit(serving)
    assert len(calls) == 4  # 2 steps x (instruction, negative prompt)
    assert all(call.get("encoder_hidden_states_mask") is None for call in calls)

    calls.clear()
    monkeypatch.setattr(qwen_image_edit, "_without_text_mask", lambda transformer: pytest.fail("mask dropped"))
    monkeypatch.setattr(qwen_image_edit, "_all_ones", lambda mask: False)  # as if a prompt had padding
    masked = edit(serving)
    assert all(call["encoder_hidden_states_mask"] is not None for call in calls)
    assert np.abs(masked - unmasked).max() <= 1


def test_a_mask_with_padding_reaches_the_transformer():
    assert not qwen_image_edit._all_ones(torch.tensor([[1, 1, 0]]))
    assert qwen_image_edit._all_ones(torch.tensor([[1, 1, 1]])) and qwen_image_edit._all_ones(None)


@pytest.fixture(params=[key for key, (family, _) in FAMILY_MODELS.items() if family in FP8_ATTENTION_FAMILIES])
def fp8_attention_family_model(request) -> tuple[str, str]:
    """(family name, tiny folder) for the families FP8 attention is wired for; the others refuse it (tested below)."""
    family, fixture = FAMILY_MODELS[request.param]
    return family, request.getfixturevalue(fixture)


def plain_attention(arguments: dict) -> bool:
    """Every unmasked call, whatever its dtype and head size: the tiny models' heads are 16 wide, in float32."""
    return arguments["attn_mask"] is None


@pytest.mark.parametrize("implementation", ["reference", "tensorwise_reference"])
def test_every_attention_call_of_each_familys_transformer_goes_through_fp8(fp8_attention_family_model, monkeypatch,
                                                                          implementation):
    """The blockwise (Triton) and per-tensor (cuDNN) algorithms, emulated: every transformer attention call is
    taken (Qwen's too: its calls carry no mask), the VAE's and the encoder's are not, and the pixels stay close."""
    family, model = fp8_attention_family_model
    calls = []
    emulated = fp8_attention.IMPLEMENTATIONS[implementation]
    monkeypatch.setitem(fp8_attention.IMPLEMENTATIONS, implementation,
                        lambda *args: calls.append(args[0].shape) or emulated(*args))
    serving = loaded(model)
    if family == "Qwen-Image-Edit":
        keep_all_ones_masks(serving, monkeypatch)
    exact = edit(serving)
    transformer_calls = record_transformer_calls(serving.pipe.transformer)
    fp8_attention.use_fp8_attention(serving.pipe.transformer, implementation, accepts=plain_attention)
    fp8 = edit(serving)
    blocks = sum(len(getattr(serving.pipe.transformer, name, ())) for name in
                 ("transformer_blocks", "single_transformer_blocks"))
    assert len(calls) == blocks * len(transformer_calls) > 0  # one attention call per block and transformer call
    assert all(shape[-1] == 16 for shape in calls)
    assert not np.array_equal(fp8, exact) and np.abs(fp8 - exact).mean() < 0.05 * 255


def test_fp8_attention_is_accepted_for_the_wired_families_and_refused_for_others(family_model, monkeypatch):
    from dataflow.serving.diffusers.speed import fp8_attention as module

    monkeypatch.setattr(module, "unavailable_reason", lambda device, kernel="triton": None)  # as on an H100
    family, model = family_model
    serving = DiffusersEditServing(model)
    for kernel in (True, "cudnn"):
        if family in FP8_ATTENTION_FAMILIES:
            check_applicable(Acceleration(fp8_attention=kernel), "cuda", serving.family)
        else:  # its attention is not wired: refused by name, before any weight is read
            with pytest.raises(InputError, match=f"fp8_attention is wired and tested for .*, not {family}; run "
                                                 "without --fp8-attention"):
                check_applicable(Acceleration(fp8_attention=kernel), "cuda", serving.family)
    other = SimpleNamespace(name="Stable-Diffusion-3", display_name="Stable Diffusion 3")
    with pytest.raises(InputError, match="fp8_attention is wired and tested for FLUX-Kontext, FLUX.2, "
                                         "Qwen-Image-Edit, not Stable Diffusion 3; run without --fp8-attention"):
        check_applicable(Acceleration(fp8_attention=True), "cuda", other)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without an FP8 GPU")
def test_fp8_attention_on_the_cpu_is_refused_for_the_gpu_not_the_family(fp8_attention_family_model):
    serving = DiffusersEditServing(fp8_attention_family_model[1], acceleration=Acceleration(fp8_attention=True))
    with pytest.raises(InputError, match=r"fp8_attention \(triton kernel\) cannot run here: it needs an NVIDIA GPU"):
        serving.load()


def test_each_family_refuses_the_options_that_do_not_apply(family_model, caplog):
    """The step cache is wired for FLUX.1 Kontext only; the FLUX.1 block rewrites are skipped with a warning."""
    family, model = family_model
    pytest.importorskip("cache_dit", reason="the step cache needs cache-dit (pip install 'dataflow-edit[cache]')")
    with pytest.raises(InputError, match=f"cache is wired and tested for FLUX-Kontext only, not {family}"):
        check_applicable(Acceleration(cache="dbcache"), "cpu", DiffusersEditServing(model).family)
    serving = loaded(model, Acceleration(split_proj_out=True, fuse_gelu=True))
    assert "split_proj_out does not apply" in caplog.text and "fuse_gelu does not apply" in caplog.text
    assert not any(type(m).__name__ == "LinearGelu" for m in serving.pipe.transformer.modules())


def test_fp8_linears_leave_each_familys_modulation_in_full_precision(family_model):
    from dataflow.serving.diffusers.speed.fp8 import Fp8Linear

    serving = loaded(family_model[1], Acceleration(fp8=True))
    names = {name for name, module in serving.pipe.transformer.named_modules() if isinstance(module, Fp8Linear)}
    assert names and not any("_mod" in name or "norm" in name or "modulation" in name for name in names)
    blocks = tuple(f"{block}." for block in serving.family.fp8_blocks)  # JoyAI's are double_blocks
    assert all(name.startswith(blocks) for name in names), names


@pytest.mark.slow
def test_regional_compilation_keeps_each_familys_pixels(family_model):
    """compile_repeated_blocks(fullgraph=True), as on CUDA by default: within the lossless parity bound."""
    _, model = family_model
    plain = edit(loaded(model))
    torch._dynamo.reset()
    try:
        compiled = loaded(model, Acceleration(compile=True))
        assert np.abs(edit(compiled) - plain).max() <= LOSSLESS_LEVELS
    finally:
        torch._dynamo.reset()
