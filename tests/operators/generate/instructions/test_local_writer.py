"""``LocalWriter`` through the real loading path: a tiny random LLaVA saved as a local folder (offline, CPU)."""

from __future__ import annotations

import json
import sys

import pytest

from dataflow.core.errors import ModelLoadError
from dataflow.operators.core_vision import PromptedImageEditInstructionGenerator
from dataflow.operators.core_vision.generate.instructions.taxonomy import load_taxonomy
from dataflow.operators.core_vision.generate.instructions.writer import InstructionAsk
from dataflow.utils.storage import FileStorage
from tests.conftest import read_jsonl
from tests.operators.generate.instructions.chat_server import solid

pytest.importorskip("transformers")

from dataflow.operators.core_vision.generate.instructions.local_writer import LocalWriter  # noqa: E402


@pytest.fixture(scope="module")
def tiny_vlm_dir(tmp_path_factory) -> str:
    from tests.operators.eval.tiny_models import build_tiny_vlm

    return build_tiny_vlm(str(tmp_path_factory.mktemp("instruct-models") / "tiny-vlm"))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run on one thread (a busy machine's thread pool makes 16-wide layers far slower)."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def asks():
    types = tuple(load_taxonomy().select(["add", "style"]))
    return [InstructionAsk("a", solid("red", 30, 20), types), InstructionAsk("b", solid("green", 18, 24), types)]


def test_the_model_loads_offline_and_answers_deterministically(tiny_vlm_dir):
    writer = LocalWriter(tiny_vlm_dir, max_new_tokens=5, batch_size=2)
    answers = writer.generate(asks())
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert writer.device == "cpu"
    fresh = LocalWriter(tiny_vlm_dir, max_new_tokens=5, batch_size=1)  # a second load, one image per batch
    assert fresh.answer(asks()) == answers
    fresh.close()
    writer.close()


def test_a_random_models_answers_are_row_errors_and_readable_ones_are_rows(tiny_vlm_dir, tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    solid("red", 30, 20).save(folder / "a.png")
    solid("green", 18, 24).save(folder / "b.png")
    writer = LocalWriter(tiny_vlm_dir, max_new_tokens=5, batch_size=2)
    generator = PromptedImageEditInstructionGenerator(writer, types=["add", "style"], per_image=2)
    summary = generator.run(FileStorage(str(folder), cache_path=str(tmp_path / "out")).step(), show_progress=False)
    assert summary.failed == 2 and read_jsonl(summary.output_path) == []  # its words hold no JSON
    assert all("holds no JSON list" in r["instruction_error"] for r in read_jsonl(summary.rejected_path))

    seen = []

    def answer(asks):  # the loaded model's place, with an answer a real VLM gives
        seen.extend(ask.image.size for ask in asks)
        return [json.dumps([{"type": "add", "instruction": "Add a cat beside the box."},
                            {"type": "style", "instruction": "Render it as a pencil sketch."}]) for ask in asks]

    monkeypatch.setattr(writer, "answer", answer)
    summary = generator.run(FileStorage(str(folder), cache_path=str(tmp_path / "out")).step(), show_progress=False)
    rows = read_jsonl(summary.output_path)
    assert summary.failed == 0 and sorted(seen) == [(18, 24), (30, 20)]  # only the failed images, asked again
    assert [(r["images"], r["edit_type"]) for r in rows] == [("a.png", "add"), ("a.png", "style"),
                                                             ("b.png", "add"), ("b.png", "style")]
    assert rows[0]["provenance"]["backend"] == "local" and rows[0]["provenance"]["model"] == tiny_vlm_dir
    writer.close()


def test_a_folder_without_a_model_or_chat_template_is_refused(tmp_path, tiny_vlm_dir):
    with pytest.raises(ModelLoadError, match="not found"):
        LocalWriter(str(tmp_path / "absent"))
    from tests.operators.eval.tiny_models import build_tiny_dino

    writer = LocalWriter(build_tiny_dino(str(tmp_path / "dino")))
    with pytest.raises(ModelLoadError, match="has no chat template; writing instructions needs a chat model"):
        writer.generate(asks()[:1])
