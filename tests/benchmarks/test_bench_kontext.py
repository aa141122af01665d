"""The benchmark's --tiny mode: it runs on CPU and the lossless mode matches plain diffusers."""

import importlib.util
import os
import sys

import pytest

pytest.importorskip("diffusers")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import does: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def load_bench():
    return load_script("bench_kontext")


def test_tiny_benchmark_reports_every_mode_and_lossless_parity(tmp_path):
    out = tmp_path / "result.json"
    result = load_bench().main(["--tiny", "--modes", "lossless,fp8,first_block_cache,offload_model,"
                                "lossless+fused",
                                "--out", str(out)])
    assert result["steps"] == 2 and result["baseline_s_per_image"] > 0
    assert result["modes"]["lossless"]["max_abs_diff_vs_baseline"] <= 0.02
    assert result["modes"]["lossless"]["step_rel_l2_vs_baseline"] <= 1e-3  # one step on the same inputs
    assert result["modes"]["lossless+fused"]["max_abs_diff_vs_baseline"] <= 0.02  # GELU epilogue, split proj_out
    fp8 = result["modes"]["fp8"]
    assert "error" not in fp8 and fp8["s_per_image"] > 0 and 0 < fp8["step_rel_l2_vs_baseline"] < 0.05
    assert "error" not in result["modes"]["first_block_cache"]
    assert "skipped" in result["modes"]["offload_model"]
    assert out.read_text().startswith("{") and '"command"' in out.read_text()


def test_an_unknown_mode_is_refused_before_anything_runs(capsys):
    with pytest.raises(SystemExit):
        load_bench().main(["--tiny", "--modes", "lossless,turbo"])
    assert "unknown mode(s) turbo" in capsys.readouterr().err


def test_the_results_table_lists_every_mode(tmp_path):
    import json

    result = {"device": "cpu", "torch": "2", "diffusers": "0.42", "resolution": "64x64", "steps": 2, "batch_size": 1,
              "baseline_s_per_image": 2.0, "baseline_peak_mem_gib": None, "baseline_step": {"step_s": 0.1},
              "modes": {"lossless": {"s_per_image": 1.0, "speedup": 2.0, "peak_mem_gib": None, "first_call_s": 3.0,
                                     "step_s": 0.05, "step_rel_l2_vs_baseline": 0.001},
                        "offload_group": {"error": "KeyError: x\nmore"}}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result))
    rows = load_script("results_table").table(str(path)).splitlines()
    assert rows[4].startswith("| baseline") and "| lossless | 1.00 | 2.00 |" in rows[5]
    assert rows[6] == "| offload_group | not measured: KeyError: x | | | | | |"


def test_the_fused_gelu_check_reports_distances_and_times():
    """On the CPU the layer computes linear + tanh GELU itself: zero distance from tanh, not from the exact GELU."""
    import torch

    check = load_bench().fused_gelu_check("cpu", torch.float32, tokens=64, dim=32, hidden=128, repeats=2)
    assert check["max_abs_diff_vs_tanh"] == 0 and check["max_abs_diff_vs_erf"] > 0
    assert check["fused_ms"] > 0 and check["unfused_ms"] > 0


def test_the_attention_layout_check_times_both_layouts():
    """What the check records, not how fast this machine is: both layouts timed without error, and each TFLOP/s
    the rounded figure of that layout's own time (a tiny CPU attention on a loaded machine rounds to 0.0)."""
    import torch

    tokens, heads, head_dim = 64, 2, 16
    check = load_bench().attention_layout_check("cpu", torch.float32, tokens=tokens, heads=heads, head_dim=head_dim,
                                                repeats=2)
    assert set(check) == {f"math_{layout}_{unit}" for layout in ("interleaved", "contiguous")
                          for unit in ("ms", "tflops")}, check  # no *_error key, nothing missing
    flop = 4 * tokens * tokens * head_dim * heads
    for layout in ("interleaved", "contiguous"):
        ms, tflops = check[f"math_{layout}_ms"], check[f"math_{layout}_tflops"]
        assert isinstance(ms, float) and ms > 0  # a real call takes microseconds; the figure keeps 1 µs
        assert isinstance(tflops, float) and tflops >= 0
        assert tflops == pytest.approx(flop / ms / 1e9, abs=6e-4)  # rounded to 3 decimals from the same time


def test_the_performance_page_holds_the_table_of_every_committed_gpu_run():
    """The speed figures in docs/performance.md are built from benchmarks/results: a run committed without its table,
    or a table edited by hand, would show users figures no run produced. Only bench_kontext.py's results have such a
    table; other results there (the driver benchmark's driver-*.json) are skipped."""
    import glob
    import json

    page = open(os.path.join(REPO, "docs", "performance.md"), encoding="utf-8").read()
    tables = load_script("results_table")
    tabled = []
    for path in sorted(glob.glob(os.path.join(REPO, "benchmarks", "results", "*.json"))):
        with open(path, encoding="utf-8") as handle:
            result = json.load(handle)
        if tables.is_families_result(result):  # bench_families.py: one table per family
            assert tables.family_tables(path) in page, f"docs/performance.md lacks the tables of {path}"
            continue
        if os.path.basename(path).startswith("driver-") or not tables.is_kontext_result(result):
            continue
        tabled.append(path)
        assert tables.table(path) in page, f"docs/performance.md lacks the table of {os.path.basename(path)}"
    assert len(tabled) >= 5, tabled  # the GPU runs committed on 2026-11-26: the filter must not skip them


def test_the_results_table_skips_other_results():
    tables = load_script("results_table")
    assert not tables.is_kontext_result({"rows": 100000, "rows_per_s": 5.0, "peak_rss_mib": 80})
    assert not tables.is_kontext_result([1, 2])
    assert tables.is_kontext_result({"device": "cpu", "torch": "2", "diffusers": "0.42", "resolution": "64x64",
                                     "steps": 2, "batch_size": 1, "baseline_s_per_image": 2.0, "modes": {}})


def test_every_mode_the_gpu_script_runs_exists():
    """A misspelt mode would stop the one GPU call of a session before anything is measured."""
    import re

    script = open(os.path.join(REPO, "benchmarks", "gpu_check.sh"), encoding="utf-8").read()
    listed = ",".join(re.findall(r"^\s*modes=(?:\$modes,)?(\S+)$", script, re.M)).split(",")
    assert "lossless" in listed and "fp8" in listed and "fp8+fp8_attention_cudnn" in listed
    assert set(listed) <= set(load_bench().MODES)
    families = ",".join(re.findall(r"--families (\S+)", script)).split(",")
    assert "qwen-edit-2509" in families and "flux2-dev" in families
    assert set(families) <= set(load_script("bench_families").FAMILIES)


@pytest.mark.skipif(pytest.importorskip("torch").cuda.is_available(), reason="checks the refusal on a CPU machine")
def test_the_gpu_diagnostics_refuse_a_machine_without_cuda(capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_script("gpu_diagnostics").main([])
    assert exit_info.value.code == 2 and "needs a CUDA GPU" in capsys.readouterr().err
