"""The step file pairs each result with its own row: an input that changes during the run is refused, not
written with results shifted onto other rows, and the rerun finishes it with every row once."""

import numpy as np
import pytest
from PIL import Image

from dataflow.core.errors import InputError
from dataflow.io import ImageIO
from dataflow.operators.core_vision import PromptedImageEditGenerator
from dataflow.utils.storage import FileStorage
from tests.conftest import edit_row, read_jsonl, write_image, write_jsonl
from tests.engines.fakes import InvertServing


def numbered_rows(tmp_path, n, prefix="row", with_ids=True):
    """n rows, each with its own random image, and an id where asked."""
    rows = []
    for i in range(n):
        image = write_image(tmp_path / f"{prefix}-{i:03d}.png", 12, 12, seed=hash(prefix) % 1000 + i)
        extra = {"id": f"{prefix}-{i:03d}"} if with_ids else {}
        rows.append(edit_row(image, f"Invert {prefix} {i}.", **extra))
    return rows


def run(tmp_path, source, on_batch=None):
    serving = InvertServing(batch_size=4, on_batch=on_batch, image_io=ImageIO(save_path=str(tmp_path / "out")))
    storage = FileStorage(source, cache_path=str(tmp_path / "out"))
    return PromptedImageEditGenerator(serving, save_interval=5).run(storage.step(), show_progress=False)


def assert_each_row_holds_its_own_edit(rows):
    for row in rows:
        (path,) = row["output_image"]
        source = np.asarray(Image.open(row["images"]).convert("RGB"))
        assert np.array_equal(np.asarray(Image.open(path)), 255 - source), (row.get("id"), path)


CHANGES = {
    "a row inserted at the top": lambda rows, new: [new] + rows,
    "a row deleted": lambda rows, new: rows[:10] + rows[11:],
    "a row appended": lambda rows, new: rows + [new],
    "an instruction edited": lambda rows, new: rows[:5] + [dict(rows[5], conversations=new["conversations"])]
    + rows[6:],
}


@pytest.mark.parametrize("with_ids", [True, False], ids=["ids", "no ids"])
@pytest.mark.parametrize("change", list(CHANGES))
def test_an_input_rewritten_during_the_run_is_refused_and_the_rerun_pairs_every_row_with_its_edit(
        tmp_path, change, with_ids):
    rows = numbered_rows(tmp_path, 40, with_ids=with_ids)
    (new,) = numbered_rows(tmp_path, 1, prefix="new", with_ids=with_ids)
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    changed = CHANGES[change](rows, new)

    def rewrite_once(requests, done=[]):
        if not done:
            write_jsonl(source, changed)  # in place, as an editor or a script would
            done.append(True)

    with pytest.raises(InputError, match=r"in\.jsonl changed during the run \((line|row) \d+ is not the row|"
                                         r"in\.jsonl changed during the run \(it has 41 rows, not the 40"):
        run(tmp_path, source, on_batch=rewrite_once)
    assert not (tmp_path / "out" / "dataflow_cache_step_step1.jsonl").exists()  # no file with shifted rows

    summary = run(tmp_path, source)
    out = read_jsonl(summary.output_path)
    assert [r["images"] for r in out] == [r["images"] for r in changed]  # every row present once, in order
    assert_each_row_holds_its_own_edit(out)
    assert summary.failed == 0 and summary.exit_code == 0
