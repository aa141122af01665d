"""The documented Python sample with a folder of each family but FLUX.1 Kontext: wide, tall and square rows and a
two-image row (edited where the model takes several, refused alone where it takes one), through
PromptedImageEditGenerator, writing the step file and the images; and the CLI picking the family from the folder."""

import os

import pytest
from PIL import Image

from tests.conftest import edit_row, read_jsonl, write_image, write_jsonl

pytest.importorskip("diffusers")


@pytest.mark.parametrize("name, fixture", [("Qwen-Image-Edit", "tiny_qwen_edit_plus_dir"),
                                           ("FLUX.2", "tiny_flux2_klein_dir"),
                                           ("LongCat-Image-Edit", "tiny_longcat_dir"),
                                           ("Qwen-Image-2.1", "tiny_qwen_image21_dir"),
                                           ("JoyAI-Image-Edit", "tiny_joyai_dir"),
                                           ("JoyAI-Image-Edit", "tiny_joyai_plus_dir")])
def test_the_documented_sample_edits_every_shape_and_a_two_image_row(tmp_path, monkeypatch, request, name, fixture):
    model = request.getfixturevalue(fixture)
    data = tmp_path / "data"
    data.mkdir()
    sizes = {"wide.png": (200, 100), "square.jpg": (120, 120), "tall.webp": (90, 180), "person.png": (96, 128)}
    for i, (file, (w, h)) in enumerate(sizes.items()):
        write_image(data / file, w, h, seed=i)
    rows = [edit_row("wide.png", "Change the vase to red."), edit_row("square.jpg", "Make it brighter."),
            edit_row("tall.webp", "Make it blue."),
            edit_row(["wide.png", "person.png"], "Put the person from picture 2 into picture 1.")]
    jsonl = write_jsonl(data / "edits.jsonl", rows)
    monkeypatch.chdir(tmp_path)

    from dataflow.io import ImageIO
    from dataflow.operators.core_vision import PromptedImageEditGenerator
    from dataflow.serving.local_image_gen_serving import LocalImageGenServing
    from dataflow.utils.storage import FileStorage

    storage = FileStorage(first_entry_file_name=jsonl, cache_path="./cache_local/image_edit_local",
                          file_name_prefix="dataflow_cache_step", cache_type="jsonl")
    serving = LocalImageGenServing(
        image_io=ImageIO(save_path="./cache_local/image_edit_local"),
        hf_model_name_or_path=model, hf_cache_dir="./cache_local", hf_local_dir="./ckpt/models/",
        Image_gen_task="imageedit", batch_size=4, diffuser_model_name=name,
        diffuser_num_inference_steps=2, diffuser_image_height=96, diffuser_image_width=96, max_sequence_length=32,
    )
    generator = PromptedImageEditGenerator(image_edit_serving=serving, save_interval=10)
    generator.run(storage=storage.step(), input_image_key="images", input_conversation_key="conversations",
                  output_image_key="output_image")

    out = read_jsonl(tmp_path / "cache_local" / "image_edit_local" / "dataflow_cache_step_step1.jsonl")
    assert len(out) == 4
    if serving.max_input_images == 1:  # the two-image row fails alone, saying why
        assert out[3]["output_image"] == [] and "takes one image per row" in out[3]["output_image_error"]
        out = out[:3]
    for row, (w, h) in zip(out, [(200, 100), (120, 120), (90, 180), (200, 100)]):
        (path,) = row["output_image"]
        out_w, out_h = Image.open(os.path.join(tmp_path, path)).size
        assert out_w / out_h == pytest.approx(w / h, rel=0.05)


def test_the_cli_picks_the_family_from_the_model_folder(tmp_path, monkeypatch, capsys, tiny_flux2_klein_dir):
    from dataflow.cli.main import main

    write_image(tmp_path / "wide.png", 96, 48, seed=1)
    jsonl = write_jsonl(tmp_path / "in.jsonl", [edit_row("wide.png", "Make it blue.", id="w"),
                                                edit_row(["wide.png", "wide.png"], "Combine them.", id="two")])
    monkeypatch.chdir(tmp_path)
    code = main(["run", jsonl, "--model", tiny_flux2_klein_dir, "--out", "out", "--height", "64", "--width", "64",
                 "--no-gallery"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    rows = {r["id"]: r for r in read_jsonl(printed.out.strip().splitlines()[-1])}
    for row in rows.values():
        (path,) = row["output_image"]
        width, height = Image.open(path).size
        assert width / height == pytest.approx(2, rel=0.1)  # the first image's aspect ratio
    header = open(os.path.join("out", "edited_step1.progress.jsonl")).readline()
    assert '"pipeline": "Flux2KleinPipeline"' in header and '"steps": 4' in header  # klein's distilled default


@pytest.mark.parametrize("fixture, pipeline", [("tiny_longcat_dir", "LongCatImageEditPipeline"),
                                               ("tiny_qwen_image21_dir", "QwenImage21Pipeline"),
                                               ("tiny_joyai_plus_dir", "JoyImageEditPlusPipeline")])
def test_the_cli_picks_the_newest_families_from_the_model_folder(tmp_path, monkeypatch, capsys, request, fixture,
                                                                 pipeline):
    from dataflow.cli.main import main

    write_image(tmp_path / "tall.png", 48, 96, seed=2)
    jsonl = write_jsonl(tmp_path / "in.jsonl", [edit_row("tall.png", "Make it blue.", id="t")])
    monkeypatch.chdir(tmp_path)
    code = main(["run", jsonl, "--model", request.getfixturevalue(fixture), "--out", "out", "--height", "64",
                 "--width", "64", "--steps", "2", "--no-gallery"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    (row,) = read_jsonl(printed.out.strip().splitlines()[-1])
    (path,) = row["output_image"]
    width, height = Image.open(path).size
    assert height > width  # the input's shape, not the pipeline's square default
    header = open(os.path.join("out", "edited_step1.progress.jsonl")).readline()
    assert f'"pipeline": "{pipeline}"' in header and '"steps": 2' in header
