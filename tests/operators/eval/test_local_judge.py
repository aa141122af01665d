"""``LocalJudge`` end to end with a tiny random LLaVA saved as a local folder (offline, no torchvision)."""

from __future__ import annotations

import pytest

from dataflow.core.errors import ModelLoadError
from tests.operators.eval.conftest import item, noise

pytest.importorskip("transformers")

from dataflow.operators.core_vision.eval.metrics.local_judge import LocalJudge  # noqa: E402


def items():
    return [item(noise(40, 24, seed=1), noise(32, 32, seed=2), "make the sky red"),
            item(noise(20, 30, seed=3), noise(24, 24, seed=4), "add a cat", key="row/1")]


@pytest.fixture(scope="module")
def local_judge(tiny_vlm_dir):
    judge = LocalJudge(tiny_vlm_dir, max_new_tokens=6, batch_size=2)
    yield judge
    judge.close()


def test_runs_offline_and_deterministically(local_judge):
    pairs = [(i.sources[0], i.edited) for i in items()]
    answers = local_judge.generate(pairs, [i.instruction for i in items()])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert local_judge.generate(pairs, [i.instruction for i in items()]) == answers
    assert local_judge.device == "cpu"
    fresh = LocalJudge(local_judge.model, max_new_tokens=6)
    assert fresh.generate(pairs, [i.instruction for i in items()]) == answers  # a second load, same answers
    fresh.close()


def test_a_random_models_answer_is_each_items_error(local_judge):
    # the tiny vocabulary holds no digits, so the answer never parses
    results = local_judge.score(items() + [item(None, noise(8, 8), "x", key="row/2")])
    assert len(results) == 3 and all(r.values == {} for r in results)
    assert all("the judge's answer" in r.error for r in results[:2])
    assert "no source image" in results[2].error
    assert [r.error for r in local_judge.score(items())] == [r.error for r in results[:2]]


def test_a_parseable_answer_gives_the_values(local_judge, monkeypatch):
    monkeypatch.setattr(local_judge, "generate", lambda pairs, instructions: [
        '```json\n{"sc": 9, "pq": 4, "reason": "fine"}\n```', "SC: 3/10, PQ: 10/10"][: len(pairs)])
    first, second = local_judge.score(items())
    assert first.values == {"sc": 9.0, "pq": 4.0, "overall": 6.0, "reason": "fine"}
    assert (second.values["sc"], second.values["pq"]) == (3.0, 10.0)


def test_fingerprint_and_errors(tiny_vlm_dir, tiny_dino_dir, tmp_path):
    fingerprint = LocalJudge(tiny_vlm_dir, max_new_tokens=7).fingerprint()
    assert fingerprint["backend"] == "local" and fingerprint["max_new_tokens"] == 7 and fingerprint["prompt"]
    with pytest.raises(ModelLoadError, match="not found"):
        LocalJudge(str(tmp_path / "absent"))
    with pytest.raises(ModelLoadError, match="has no chat template"):
        LocalJudge(tiny_dino_dir).score(items()[:1])
