"""The benchmark's --tiny mode: it runs on CPU and the lossless mode matches plain diffusers."""

import importlib.util
import os

import pytest

pytest.importorskip("diffusers")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_kontext", os.path.join(REPO, "benchmarks", "bench_kontext.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_benchmark_reports_every_mode_and_lossless_parity(tmp_path):
    out = tmp_path / "result.json"
    result = load_bench().main(["--tiny", "--modes", "lossless,fp8,first_block_cache,offload_model",
                                "--out", str(out)])
    assert result["steps"] == 2 and result["baseline_s_per_image"] > 0
    assert result["modes"]["lossless"]["max_abs_diff_vs_baseline"] <= 0.02
    assert result["modes"]["fp8"]["s_per_image"] > 0 and "error" not in result["modes"]["fp8"]
    assert "error" not in result["modes"]["first_block_cache"]
    assert "skipped" in result["modes"]["offload_model"]
    assert out.read_text().startswith("{") and '"command"' in out.read_text()
