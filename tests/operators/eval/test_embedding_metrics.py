"""CLIP and DINOv2 metrics on tiny random models saved as local folders."""

from __future__ import annotations

import pickle

import pytest

from dataflow.core.errors import ModelLoadError
from tests.operators.eval.conftest import item, noise

pytest.importorskip("transformers")

from dataflow.operators.core_vision.eval.metrics.clip import CLIPMetric  # noqa: E402
from dataflow.operators.core_vision.eval.metrics.dino import DINOMetric  # noqa: E402

LONG = "make the sky red and add a cat " * 20  # far more tokens than the tiny text model's 16 positions


def items():
    a, b, c = noise(48, 32, seed=1), noise(40, 40, seed=2), noise(64, 20, seed=3)
    return [item(a, b, "make it red"), item(a, a.copy(), LONG, key="row/1"), item(c, b, "add a cat", key="row/2"),
            item(b, c, "", key="row/3")]


@pytest.fixture(params=["clip", "dino"])
def metric(request, tiny_clip_dir, tiny_dino_dir):
    metric = CLIPMetric(tiny_clip_dir, batch_size=3) if request.param == "clip" else DINOMetric(tiny_dino_dir)
    yield metric
    metric.close()


def keys_of(metric) -> set:
    return {"clip_i", "clip_t"} if metric.name == "clip" else {"dino"}


def test_values_keys_ranges_and_identity(metric):
    results = metric.score(items())
    assert len(results) == 4 and all(r.error is None for r in results)
    for result in results:
        assert set(result.values) == keys_of(metric)
        assert all(isinstance(v, float) and -1.0 <= v <= 1.0 for v in result.values.values())
    same = results[1].values["clip_i" if metric.name == "clip" else "dino"]
    assert same == pytest.approx(1.0, abs=1e-5)


def test_deterministic_across_calls_and_batch_compositions(metric):
    first = [r.values for r in metric.score(items())]
    assert [r.values for r in metric.score(items())] == first
    one_by_one = [metric.score([i])[0].values for i in items()]
    reordered = [r.values for r in metric.score(items()[::-1])][::-1]
    for values in (one_by_one, reordered):
        for got, expected in zip(values, first):
            assert got.keys() == expected.keys()
            assert all(got[k] == pytest.approx(expected[k], abs=1e-5) for k in got)


def test_loads_once_and_pickles_without_the_model(metric):
    metric.score(items()[:1])
    net = metric._net
    metric.score(items()[:1])
    assert metric._net is net and metric.device == "cpu"
    clone = pickle.loads(pickle.dumps(metric))
    assert clone._net is None
    assert clone.score(items()[:1])[0].values == pytest.approx(metric.score(items()[:1])[0].values, abs=1e-6)


def test_item_without_source_is_its_error(metric):
    results = metric.score([item(None, noise(16, 16)), items()[0]])
    assert "no source image" in results[0].error and results[1].error is None


def test_missing_or_wrong_folders_are_model_load_errors(tmp_path, tiny_clip_dir, tiny_dino_dir):
    with pytest.raises(ModelLoadError, match="not found"):
        CLIPMetric(str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="config.json"):
        DINOMetric(str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match="holds a 'dinov2' model; the clip metric needs 'clip'"):
        CLIPMetric(tiny_dino_dir).score(items()[:1])
    with pytest.raises(ModelLoadError, match="holds a 'clip' model; the dino metric needs 'dinov2'"):
        DINOMetric(tiny_clip_dir).score(items()[:1])
    note = CLIPMetric("someone/clip-model").check()
    assert "Hugging Face Hub" in note


def test_offline_hub_id_is_a_model_load_error_that_suggests_a_folder():
    with pytest.raises(ModelLoadError, match="pass the local folder"):
        DINOMetric("nobody/no-such-dino").score(items()[:1])
