"""The benchmark's --tiny mode: it runs on CPU and the lossless mode matches plain diffusers."""

import importlib.util
import os

import pytest

pytest.importorskip("diffusers")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
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
    import torch

    check = load_bench().attention_layout_check("cpu", torch.float32, tokens=64, heads=2, head_dim=16, repeats=2)
    assert check["math_interleaved_ms"] > 0 and check["math_contiguous_ms"] > 0
    assert check["math_contiguous_tflops"] > 0


def test_the_readme_holds_the_table_of_every_committed_gpu_run():
    """The README's speed figures are built from benchmarks/results: a run committed without its table, or a table
    edited by hand, would show users figures no run produced."""
    import glob

    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    paths = sorted(glob.glob(os.path.join(REPO, "benchmarks", "results", "*.json")))
    assert paths
    tables = load_script("results_table")
    for path in paths:
        assert tables.table(path) in readme, f"README lacks the table of {os.path.basename(path)}"


def test_every_mode_the_gpu_script_runs_exists():
    """A misspelt mode would stop the one GPU call of a session before anything is measured."""
    import re

    script = open(os.path.join(REPO, "benchmarks", "gpu_check.sh"), encoding="utf-8").read()
    listed = ",".join(re.findall(r"^modes=(?:\$modes,)?(\S+)$", script, re.M)).split(",")
    assert "lossless" in listed and "fp8" in listed
    assert set(listed) <= set(load_bench().MODES)


@pytest.mark.skipif(pytest.importorskip("torch").cuda.is_available(), reason="checks the refusal on a CPU machine")
def test_the_gpu_diagnostics_refuse_a_machine_without_cuda(capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_script("gpu_diagnostics").main([])
    assert exit_info.value.code == 2 and "needs a CUDA GPU" in capsys.readouterr().err
