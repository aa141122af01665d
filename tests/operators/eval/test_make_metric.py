"""``make_metric``: names to metric instances, options checked."""

from __future__ import annotations

import pytest

from dataflow.core.errors import InputError
from dataflow.operators.core_vision.eval.metrics import METRICS, make_metric


def test_names_map_to_their_classes():
    built = {name: make_metric(name) for name in ("change", "clip", "dino")}
    assert {n: type(m).__name__ for n, m in built.items()} == {
        "change": "ChangeMetric", "clip": "CLIPMetric", "dino": "DINOMetric"}
    assert all(m.name == n for n, m in built.items())
    assert built["clip"].model == "openai/clip-vit-large-patch14"
    assert built["dino"].model == "facebook/dinov2-base"
    assert make_metric("change", pixel_threshold=0.1).pixel_threshold == 0.1


def test_judge_picks_its_backend():
    api = make_metric("judge", api_url="http://127.0.0.1:1", model="m", api_key="k", max_concurrency=3)
    assert type(api).__name__ == "APIJudge" and api.concurrency == 3 and api.api_url == "http://127.0.0.1:1/v1"
    local = make_metric("judge", model="some/vlm", max_new_tokens=64)
    assert type(local).__name__ == "LocalJudge" and local.model == "some/vlm" and local.name == "judge"
    assert make_metric("judge", api_url=None).model == "Qwen/Qwen2.5-VL-7B-Instruct"


def test_unknown_names_and_options_are_input_errors():
    with pytest.raises(InputError, match="unknown metric 'lpips'; known metrics: change, clip, dino, judge, editscore"):
        make_metric("lpips")
    with pytest.raises(InputError, match="'change' .*unexpected keyword argument 'model'.*pixel_threshold"):
        make_metric("change", model="x")
    with pytest.raises(InputError, match="APIJudge"):
        make_metric("judge", api_url="http://127.0.0.1:1")  # no model name
    assert METRICS == ("change", "clip", "dino", "judge", "editscore")


def test_editscore_is_a_reward_of_a_base_model_and_an_adapter():
    metric = make_metric("editscore")
    assert type(metric).__name__ == "EditScoreMetric" and metric.name == "editscore"
    assert (metric.model, metric.lora) == ("Qwen/Qwen2.5-VL-7B-Instruct", "EditScore/EditScore-7B")
    assert make_metric("editscore", model="some/vlm", lora=None).fingerprint()["lora"] is None
