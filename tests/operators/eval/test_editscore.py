"""``EditScoreMetric`` with a tiny random LLaVA (and a tiny LoRA on it) saved as local folders; EditScore's answer
format and arithmetic on known answers."""

from __future__ import annotations

import math

import pytest

from dataflow.core.errors import ModelLoadError
from tests.operators.eval.conftest import item, noise

pytest.importorskip("transformers")

from dataflow.operators.core_vision.eval.metrics.editscore import (  # noqa: E402
    EditScoreMetric,
    editscore_values,
    pq_prompt,
    sc_prompt,
    score_list,
)


def items():
    return [item(noise(40, 24, seed=1), noise(32, 32, seed=2), "make the sky red"),
            item(noise(20, 30, seed=3), noise(24, 24, seed=4), "add a cat", key="row/1")]


@pytest.fixture(scope="module")
def tiny_lora_dir(tiny_vlm_dir, tmp_path_factory) -> str:
    """A random (not zero-initialised) LoRA on the tiny LLaVA's attention, as peft saves an adapter."""
    peft = pytest.importorskip("peft")
    import torch
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(1)
    base = LlavaForConditionalGeneration.from_pretrained(tiny_vlm_dir)
    config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    folder = str(tmp_path_factory.mktemp("metric-models") / "tiny-lora")
    peft.get_peft_model(base, config).save_pretrained(folder)
    return folder


def test_the_prompts_are_editscores_on_its_25_point_scale():
    assert "Editing instruction: make it red" in sc_prompt("make it red")
    assert "From scale 0 to 25" in sc_prompt("x") and "10" not in sc_prompt("x").split("RULES")[1]
    assert "output score = [naturalness, artifacts]" in pq_prompt() and "0 to 25" in pq_prompt()


def test_answers_give_the_reward_as_editscore_computes_it():
    values = editscore_values('{"reasoning": "sky is red", "score": [20, 15]}',
                              'blah ```json\n{"reasoning": "clean", "score": [25, 10]}\n```')
    assert values["prompt_following"] == 8.0 and values["consistency"] == 6.0
    assert values["perceptual_quality"] == 4.0
    assert values["overall"] == pytest.approx(math.sqrt(6.0 * 4.0))
    assert values["reason"] == "sky is red"
    assert score_list('reasoning first... "score": [7, 30]')[0] == [7.0, 30.0]
    assert editscore_values('"score": [7, 30]', '"score": [50]')["perceptual_quality"] == 10.0  # clamped
    with pytest.raises(ValueError, match="no score list"):
        score_list("I cannot judge this")


def test_a_random_model_loads_from_its_folder_and_each_unreadable_answer_is_its_items_error(tiny_vlm_dir):
    metric = EditScoreMetric(tiny_vlm_dir, lora=None, max_new_tokens=6, batch_size=2)
    results = metric.score(items() + [item(None, noise(8, 8), "x", key="row/2")])
    assert len(results) == 3 and all(r.values == {} for r in results)
    assert all("EditScore's the answer has no score list" in r.error for r in results[:2])
    assert "no source image" in results[2].error
    assert metric.device == "cpu"
    assert [r.error for r in metric.score(items())] == [r.error for r in results[:2]]  # greedy: the same again
    metric.close()


def test_parsed_answers_become_one_reward_per_item(tiny_vlm_dir, monkeypatch):
    metric = EditScoreMetric(tiny_vlm_dir, lora=None, max_new_tokens=4)
    answers = {"sc": ['{"score": [25, 20]}', '{"score": [5, 25]}'], "pq": ['{"score": [25, 25]}', '"score": [20]']}
    monkeypatch.setattr(metric, "ask", lambda images, texts: answers["sc" if len(images[0]) == 2 else "pq"])
    first, second = metric.score(items())
    assert first.values["overall"] == pytest.approx(math.sqrt(8.0 * 10.0))
    assert second.values["overall"] == pytest.approx(math.sqrt(2.0 * 8.0))


def test_the_adapter_loads_onto_the_base_through_transformers(tiny_vlm_dir, tiny_lora_dir):
    plain = EditScoreMetric(tiny_vlm_dir, lora=None, max_new_tokens=6)
    adapted = EditScoreMetric(tiny_vlm_dir, lora=tiny_lora_dir, max_new_tokens=6)
    net, _ = adapted.loaded()
    assert type(net).__name__ == "LlavaForConditionalGeneration"  # merged: the base class, no adapter layers left
    pairs = [[i.sources[0], i.edited] for i in items()]
    texts = [sc_prompt(i.instruction) for i in items()]
    import torch

    inputs = adapted.loaded()[1](text=[adapted.loaded()[1].apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": texts[0]}]}],
        add_generation_prompt=True, tokenize=False)], images=pairs[0], return_tensors="pt")
    with torch.inference_mode():
        assert not torch.equal(plain.loaded()[0](**inputs).logits, net(**inputs).logits)  # the adapter acts
    assert adapted.fingerprint()["lora"] == tiny_lora_dir and plain.fingerprint()["lora"] is None
    plain.close()
    adapted.close()


def test_missing_folders_fail_clearly(tiny_vlm_dir, tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        EditScoreMetric(str(tmp_path / "absent"), lora=None)
    with pytest.raises(ModelLoadError, match="lora adapter folder not found"):
        EditScoreMetric(tiny_vlm_dir, lora=str(tmp_path / "no-adapter"))
    with pytest.raises(ModelLoadError, match="holds no adapter_config.json"):
        EditScoreMetric(tiny_vlm_dir, lora=tiny_vlm_dir)
    empty = tmp_path / "empty-adapter"
    empty.mkdir()
    (empty / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="could not load the LoRA adapter"):
        EditScoreMetric(tiny_vlm_dir, lora=str(empty)).score(items()[:1])
