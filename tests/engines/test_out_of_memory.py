"""Out-of-memory handling with the real Kontext serving whose pipe runs out of memory on purpose."""

import numpy as np
import pytest
from PIL import Image

from tests.conftest import edit_row, read_jsonl, write_image, write_jsonl

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from dataflow.io import ImageIO  # noqa: E402
from dataflow.operators.core_vision import PromptedImageEditGenerator  # noqa: E402
from dataflow.serving.diffusers.kontext_serving import FluxKontextServing  # noqa: E402
from dataflow.utils.storage import FileStorage  # noqa: E402


class OutOfMemoryPipe:
    """Wraps a pipe: more than ``limit`` images in one call, or a prompt embedding marked huge, runs out of memory."""

    def __init__(self, pipe, limit):
        self.pipe, self.limit, self.batches = pipe, limit, []

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, **kwargs):
        self.batches.append(len(kwargs["image"]))
        if len(kwargs["image"]) > self.limit or any(im.getpixel((0, 0)) == (255, 0, 255) for im in kwargs["image"]):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return self.pipe(**kwargs)


def run(tmp_path, rows, model, limit, cache):
    serving = FluxKontextServing(model, batch_size=4, num_inference_steps=2, height=32, width=32,
                                 max_sequence_length=32)
    serving.load()
    if limit is not None:
        serving.pipe = OutOfMemoryPipe(serving.pipe, limit)
    serving.image_io = ImageIO(str(tmp_path / cache / "images"))
    storage = FileStorage(write_jsonl(tmp_path / "in.jsonl", rows), cache_path=str(tmp_path / cache))
    summary = PromptedImageEditGenerator(serving, save_interval=2).run(storage.step())
    return serving, summary, read_jsonl(summary.output_path)


def test_an_out_of_memory_batch_is_split_and_a_row_that_never_fits_fails_alone(tmp_path, tiny_model_dir):
    rows = [edit_row(write_image(tmp_path / f"{i}.png", 32, 32, seed=i), f"edit {i}") for i in range(4)]
    poison = Image.new("RGB", (32, 32), (255, 0, 255))
    poison.save(tmp_path / "poison.png")
    rows.insert(2, edit_row(str(tmp_path / "poison.png"), "edit the huge one"))

    serving, summary, out = run(tmp_path, rows, tiny_model_dir, limit=2, cache="oom")
    assert serving.pipe.batches[0] == 4 and max(serving.pipe.batches[1:]) <= 2
    assert (summary.generated, summary.failed) == (4, 1)
    assert "out of accelerator memory even for a single row" in out[2]["output_image_error"]

    _, _, reference = run(tmp_path, rows[:2] + rows[3:], tiny_model_dir, limit=None, cache="ref")
    for row, ref in zip(out[:2] + out[3:], reference):
        a = np.asarray(Image.open(row["output_image"][0]), dtype=np.int16)
        b = np.asarray(Image.open(ref["output_image"][0]), dtype=np.int16)
        assert np.abs(a - b).max() <= 1
