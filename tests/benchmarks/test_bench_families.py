"""The family benchmark's --tiny mode on the CPU: every family it runs, the lossless mode equal to plain diffusers,
the modes that need a GPU skipped with their reason, and its result tables."""

import json

import pytest

from tests.benchmarks.test_bench_kontext import load_script

pytest.importorskip("diffusers")


def check_family(entry: dict, fp8_bound: float) -> None:
    base = entry["baseline"]
    assert "error" not in base and base["s_per_image_card"] > 0 and base["s_per_image_distilled"] > 0
    lossless, fp8 = entry["modes"]["lossless"], entry["modes"]["fp8"]
    assert lossless["max_abs_diff_vs_baseline"] <= 0.02 and lossless["step_rel_l2_vs_baseline"] <= 1e-3
    assert "error" not in fp8 and 0 < fp8["step_rel_l2_vs_baseline"] < fp8_bound
    assert fp8["speedup_card"] > 0 and fp8["speedup_distilled"] > 0
    assert "compute capability 9.0+" in entry["modes"]["fp8+fp8_attention_cudnn"]["skipped"]


def test_tiny_flux2_klein_reports_each_mode_and_lossless_parity(tmp_path):
    out = tmp_path / "families.json"
    result = load_script("bench_families").main(["--tiny", "--families", "flux2-klein-4b", "--modes",
                                                  "lossless,fp8,fp8+fp8_attention_cudnn", "--out", str(out)])
    entry = result["families"]["flux2-klein-4b"]
    check_family(entry, fp8_bound=0.05)
    assert entry["modes"]["lossless"]["card_method"] == "measured (= distilled)"  # [klein] is distilled already
    written = json.loads(out.read_text())
    assert written["command"].startswith("python") and written["families"]["flux2-klein-4b"]["modes"].keys() == \
        entry["modes"].keys()
    tables = load_script("results_table").family_tables(str(out))
    assert "**families.json, FLUX.2 [klein] 4B**" in tables and "| lossless | " in tables


@pytest.mark.slow
def test_tiny_qwen_edit_extrapolates_its_card_schedule_and_keeps_lossless_parity():
    result = load_script("bench_families").main(["--tiny", "--families", "qwen-edit-2509", "--modes",
                                                  "lossless,fp8,fp8+fp8_attention_cudnn"])
    entry = result["families"]["qwen-edit-2509"]
    check_family(entry, fp8_bound=0.05)
    assert entry["baseline"]["card_method"].startswith("extrapolated: 2 steps")  # 40 steps with CFG: not run whole


def test_unknown_families_and_modes_are_refused_before_anything_runs(capsys):
    bench = load_script("bench_families")
    with pytest.raises(SystemExit):
        bench.main(["--tiny", "--families", "flux2-klein-4b,sdxl"])
    assert "unknown family(s) sdxl" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--tiny", "--modes", "turbo"])
    assert "unknown mode(s) turbo" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # Qwen's scheduler makes a 1-step call's timestep NaN
        bench.main(["--tiny", "--warmup-steps", "1"])
    assert "must be 2 or more" in capsys.readouterr().err


def test_the_family_table_shows_both_schedules_and_failed_modes(tmp_path):
    result = {"benchmark": "bench_families", "device": "NVIDIA H200", "torch": "2.11", "diffusers": "0.42.1",
              "resolution": "1024x1024", "families": {"qwen-edit-2509": {
                  "title": "Qwen-Image-Edit-2509 (20.4 B)", "card_steps": 40, "card_guidance": {"true_cfg_scale": 4.0},
                  "distilled_steps": 8, "distilled_guidance": {"true_cfg_scale": 1.0},
                  "baseline": {"s_per_image_card": 36.0, "s_per_image_distilled": 3.6, "peak_mem_gib": 40.1,
                               "step_s": 0.44},
                  "modes": {"fp8": {"s_per_image_card": 20.0, "speedup_card": 1.8, "s_per_image_distilled": 2.0,
                                    "speedup_distilled": 1.8, "peak_mem_gib": 22.0, "first_call_s": 30.0,
                                    "step_s": 0.25, "step_rel_l2_vs_baseline": 0.02},
                            "lossless": {"error": "OutOfMemoryError: CUDA\nmore"}}}}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result))
    rows = load_script("results_table").family_tables(str(path)).splitlines()
    assert rows[0] == ("**r.json, Qwen-Image-Edit-2509 (20.4 B)**: NVIDIA H200, torch 2.11, diffusers 0.42.1, "
                       "1024x1024; card: 40 steps true_cfg_scale 4.0, distilled: 8 steps true_cfg_scale 1.0")
    assert rows[4] == "| baseline (plain diffusers) | 36.00 | 1.00 | 3.60 | 1.00 | 40.10 | | 0.440 | |"
    assert rows[5] == "| fp8 | 20.00 | 1.80 | 2.00 | 1.80 | 22.00 | 30.0 | 0.250 | 0.020 |"
    assert rows[6] == "| lossless | not measured: OutOfMemoryError: CUDA | | | | | | | |"
