"""``dataflow-edit run --lora`` and ``--recipe`` on a tiny Qwen-Image-Edit-Plus folder, as users run them: every row
edited with the LoRA, a shipped recipe's steps and CFG seen in the pipeline's calls, resume safety with LoRAs."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dataflow.cli.main import main
from tests.conftest import edit_row, read_jsonl, write_image, write_jsonl

pytest.importorskip("diffusers")
pytest.importorskip("peft")
pytest.importorskip("torchvision", reason="Qwen2VLProcessor needs torchvision (make test installs it)")
from tests import tiny_qwen_edit  # noqa: E402
from tests.serving.diffusers.test_lora import hub_cache  # noqa: E402
from tests.tiny_lora import save_tiny_lora  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = ["--steps", "2", "--height", "32", "--width", "32", "--no-gallery"]


@pytest.fixture(scope="module")
def qwen_plus(tmp_path_factory) -> str:
    return tiny_qwen_edit.build_tiny_qwen_edit(str(tmp_path_factory.mktemp("models") / "tiny-qwen-plus"), plus=True)


@pytest.fixture
def rows(tmp_path) -> str:
    images = [write_image(tmp_path / f"p{i}.png", 48, 32, seed=i) for i in range(3)]
    return write_jsonl(tmp_path / "in.jsonl", [edit_row(os.path.basename(p), f"make it red {i}", id=f"r{i}")
                                               for i, p in enumerate(images)])


def outputs(output_jsonl) -> dict:
    """Each row's edited pixels, by id."""
    base = os.path.dirname(os.path.dirname(output_jsonl))
    return {row["id"]: np.asarray(Image.open(os.path.join(base, row["output_image"][0])), dtype=np.int16)
            for row in read_jsonl(output_jsonl)}


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(["run", *args])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    return code, (lines[-1] if lines else ""), captured.err


def cli(*args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "dataflow.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_run_with_a_lora_edits_every_row_and_differs_from_one_without(tmp_path, rows, qwen_plus):
    lora = save_tiny_lora(tiny_qwen_edit, str(tmp_path / "lora"), weight_name="tiny_lora.safetensors")
    shutil.move(lora, tmp_path / "tiny_lora.safetensors")
    with_lora = cli("run", "in.jsonl", "--model", qwen_plus, "--lora", "tiny_lora.safetensors", "--out", "with",
                    *SMALL, cwd=tmp_path)
    assert with_lora.returncode == 0, with_lora.stderr
    assert "3 edited, 0 skipped (done earlier), 0 failed" in with_lora.stderr
    without = cli("run", "in.jsonl", "--model", qwen_plus, "--out", "without", *SMALL, cwd=tmp_path)
    assert without.returncode == 0, without.stderr
    edited = outputs(tmp_path / with_lora.stdout.strip().splitlines()[-1])
    plain = outputs(tmp_path / without.stdout.strip().splitlines()[-1])
    assert set(edited) == set(plain) == {"r0", "r1", "r2"}
    assert all(np.abs(edited[key] - plain[key]).max() > 5 for key in edited)


def test_a_rerun_with_the_same_lora_skips_everything_and_another_lora_is_never_mixed_in(tmp_path, rows, qwen_plus,
                                                                                         capsys):
    lora = tmp_path / "style.safetensors"
    shutil.copy(save_tiny_lora(tiny_qwen_edit, str(tmp_path / "a"), seed=1), lora)
    common = [rows, "--model", qwen_plus, "--lora", f"{lora}:0.8", "--out", str(tmp_path / "out"), *SMALL]
    code, output, err = run(capsys, *common)
    assert code == 0 and "3 edited, 0 skipped" in err, err
    first = outputs(output)
    code, _, err = run(capsys, *common)
    assert code == 0 and "0 edited, 3 skipped (done earlier)" in err, err

    shutil.copy(save_tiny_lora(tiny_qwen_edit, str(tmp_path / "b"), seed=2), lora)  # same name, other weights
    code, _, err = run(capsys, *common)
    assert code == 2 and "holds results made with other settings (lora:" in err, err

    code, output, err = run(capsys, rows, "--model", qwen_plus, "--lora", f"{lora}:0.8", "--out",
                            str(tmp_path / "fresh"), *SMALL)
    assert code == 0 and "3 edited, 0 skipped" in err, err
    assert all(np.abs(outputs(output)[key] - first[key]).max() > 5 for key in first)


def test_a_shipped_recipe_runs_at_its_steps_with_cfg_off(tmp_path, rows, qwen_plus, capsys, monkeypatch):
    import huggingface_hub.constants
    from diffusers import QwenImageEditPlusPipeline

    # The recipe's LoRA, as the Hub cache holds it after a download: a tiny stand-in under the real names.
    repo, filename = "lightx2v/Qwen-Image-Lightning", \
        "Qwen-Image-Edit-2509/Qwen-Image-Edit-2509-Lightning-4steps-V1.0-bf16.safetensors"
    lora = save_tiny_lora(tiny_qwen_edit, str(tmp_path / "lightning"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", hub_cache(tmp_path / "hub", repo, filename, lora))
    calls = []
    original = QwenImageEditPlusPipeline.__call__

    def recorded(pipe, *args, **kwargs):
        forwards = []
        hook = pipe.transformer.register_forward_hook(lambda *a: forwards.append(1))
        try:
            return original(pipe, *args, **kwargs)
        finally:
            hook.remove()
            calls.append(dict(kwargs, scheduler=pipe.scheduler, forwards=len(forwards)))

    monkeypatch.setattr(QwenImageEditPlusPipeline, "__call__", recorded)
    code, output, err = run(capsys, rows, "--model", qwen_plus, "--recipe", "qwen-image-edit-2509-lightning-4step",
                            "--out", str(tmp_path / "out"), "--height", "32", "--width", "32", "--no-gallery")
    assert code == 0, err
    assert len(read_jsonl(output)) == 3 and len(calls) == 3
    for call in calls:
        assert call["num_inference_steps"] == 4 and call["true_cfg_scale"] == 1.0
        assert call["negative_prompt_embeds"] is None and call["forwards"] == 4  # one forward a step: CFG off
        assert call["scheduler"].config.time_shift_type == "exponential"
        assert call["scheduler"].config.base_shift == pytest.approx(1.0986122886681098)


def test_lora_and_recipe_flags_are_refused_by_backends_without_a_model(tmp_path, rows, capsys):
    code, _, err = run(capsys, rows, "--backend", "classic", "--lora", "x.safetensors", "--out", str(tmp_path / "o"))
    assert code == 2 and "--lora and --recipe take a diffusers model" in err


def test_a_missing_lora_file_fails_before_the_model_loads(tmp_path, rows, qwen_plus, capsys):
    code, _, err = run(capsys, rows, "--model", qwen_plus, "--lora", "nope.safetensors", "--out", str(tmp_path / "o"),
                       *SMALL)
    assert code == 2 and err.strip().splitlines()[-1] == "error: LoRA file not found: nope.safetensors"
    assert not os.path.exists(tmp_path / "o")
