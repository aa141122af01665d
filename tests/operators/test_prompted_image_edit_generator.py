"""The documented DataFlow-MM sample, run unchanged apart from paths and numbers, on a tiny local model."""

import os

import pytest
from PIL import Image

from tests.conftest import edit_row, read_jsonl, write_jsonl

pytest.importorskip("diffusers")


def test_the_documented_python_sample_writes_the_step_file_and_images(tmp_path, tiny_model_dir, mixed_images,
                                                                    monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    for name, path in mixed_images.items():
        os.replace(path, data / os.path.basename(path))
    rows = [
        edit_row("wide.png", "Change the vase to red.", source="a"),
        edit_row("square.jpg", "Make it brighter.", source="b"),
        {"images": "tall.webp", "conversations": [
            {"role": "user", "content": "Make it blue."}, {"role": "assistant", "content": "Done."},
            {"role": "user", "content": "Now make it red."}]},
    ]
    jsonl = write_jsonl(data / "edits.jsonl", rows)
    monkeypatch.chdir(tmp_path)
    image_save_path = "./cache_local/image_edit_local"

    # ---- the documented sample, verbatim apart from the model folder and the sizes ----
    from dataflow.operators.core_vision import PromptedImageEditGenerator
    from dataflow.serving.local_image_gen_serving import LocalImageGenServing
    from dataflow.utils.storage import FileStorage
    from dataflow.io import ImageIO

    storage = FileStorage(first_entry_file_name=jsonl, cache_path="./cache_local/image_edit_local",
                          file_name_prefix="dataflow_cache_step", cache_type="jsonl")
    serving = LocalImageGenServing(
        image_io=ImageIO(save_path=image_save_path),
        hf_model_name_or_path=tiny_model_dir,
        hf_cache_dir="./cache_local", hf_local_dir="./ckpt/models/",
        Image_gen_task="imageedit", batch_size=4, diffuser_model_name="FLUX-Kontext",
        diffuser_num_inference_steps=2, diffuser_guidance_scale=3.5,
        diffuser_image_height=64, diffuser_image_width=64,
    )
    generator = PromptedImageEditGenerator(image_edit_serving=serving, save_interval=10)
    generator.run(storage=storage.step(), input_image_key="images",
                  input_conversation_key="conversations", output_image_key="output_image")
    # ------------------------------------------------------------------------------------

    step_file = tmp_path / "cache_local" / "image_edit_local" / "dataflow_cache_step_step1.jsonl"
    out = read_jsonl(step_file)
    assert len(out) == 3
    for i, (row, original) in enumerate(zip(out, rows)):
        assert {k: v for k, v in row.items() if k not in ("output_image", "output_image_license")} == original
        assert row["output_image_license"] == "unknown"  # the tiny model's folder has no model card
        assert row["output_image"] == [f"./cache_local/image_edit_local/sample_{i}/sample_{i}_0.png"]
    sizes = [Image.open(tmp_path / row["output_image"][0]).size for row in out]
    for (w, h), (in_w, in_h) in zip(sizes, [(200, 100), (120, 120), (90, 180)]):
        assert w / h == pytest.approx(in_w / in_h, rel=0.05)
