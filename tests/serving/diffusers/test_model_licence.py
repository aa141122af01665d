"""The editing model's licence, read from its model card, on every output: run.json, each output row, the gallery
header and the exported dataset (its card's ``license`` and a ``license`` column). Never guessed: a folder without a
card says "unknown"."""

import json
import os
import shutil

import pytest

from dataflow.io.model_source import card_license, folder_revision, license_label
from tests.conftest import edit_row, read_jsonl, write_image, write_jsonl

CARD = """---
license: apache-2.0
language:
- en
pipeline_tag: image-to-image
---
# A tiny model
"""


def card_in(folder, text):
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    return str(folder)


@pytest.mark.parametrize("text, expected, label", [
    (CARD, {"license": "apache-2.0"}, "apache-2.0"),
    ("---\nlicense: other\nlicense_name: flux-1-dev-non-commercial-license\nlicense_link: LICENSE.md\n---\n",
     {"license": "other", "license_name": "flux-1-dev-non-commercial-license"}, "flux-1-dev-non-commercial-license"),
    ("# A card that names no licence\n", {"license": "unknown"}, "unknown"),
    ("---\npipeline_tag: image-to-image\n---\nlicense: mit (in the prose, not the front matter)\n",
     {"license": "unknown"}, "unknown"),
])
def test_the_licence_is_the_cards_front_matter_and_never_guessed(tmp_path, text, expected, label):
    info = card_license(card_in(tmp_path, text))
    assert info == expected and license_label(info) == label


def test_a_folder_without_a_card_has_an_unknown_licence_and_no_revision(tmp_path):
    assert card_license(str(tmp_path)) == {"license": "unknown"}
    assert folder_revision(str(tmp_path)) is None


def test_a_hub_download_names_its_commit(tmp_path):
    snapshot = tmp_path / "models--org--name" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    assert folder_revision(str(snapshot)) == "0123abcd"
    local = tmp_path / "name"
    (local / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (local / ".cache" / "huggingface" / "download" / "model_index.json.metadata").write_text("fedcba98\netag\n1.0\n")
    assert folder_revision(str(local)) == "fedcba98"


def run_and_export(tmp_path, model):
    from dataflow.cli.main import main

    write_image(tmp_path / "wide.png", 96, 48, seed=1)
    jsonl = write_jsonl(tmp_path / "in.jsonl", [edit_row("wide.png", "Make it blue.", id="w")])
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["run", jsonl, "--model", model, "--out", "out", "--height", "64", "--width", "64",
                     "--steps", "2"]) == 0
        assert main(["export", "out/edited_step1.jsonl", "--format", "hf", "--out", "exported"]) == 0
    finally:
        os.chdir(cwd)
    out = tmp_path / "out"
    return (json.loads((out / "run.json").read_text()), read_jsonl(out / "edited_step1.jsonl"),
            (out / "edited_step1.gallery.html").read_text(), tmp_path / "exported")


def front_matter(card):
    assert card.startswith("---\n")
    return card[: card.index("\n---\n", 4) + 1]


def exported_licences(folder):
    import pyarrow.parquet as pq

    return [pq.read_table(str(path)).column("license").to_pylist()
            for path in sorted((folder / "data").glob("*.parquet"))]


def test_a_run_carries_the_cards_licence_into_run_json_the_rows_the_gallery_and_the_export(tmp_path,
                                                                                          tiny_model_dir):
    pytest.importorskip("pyarrow")
    model = shutil.copytree(tiny_model_dir, tmp_path / "tiny-kontext-with-card")
    card_in(model, CARD)
    manifest, rows, gallery, exported = run_and_export(tmp_path, str(model))
    assert manifest["model"] == {"model": str(model), "revision": None, "license": "apache-2.0"}
    assert [row["output_image_license"] for row in rows] == ["apache-2.0"]
    assert "Model licence: apache-2.0" in gallery
    card = (exported / "README.md").read_text()
    assert "\nlicense: apache-2.0\ntags:\n" in front_matter(card)
    assert "Model licence (from its model card): `apache-2.0`" in card
    assert exported_licences(exported) == [["apache-2.0"]]


def test_a_model_without_a_card_is_recorded_as_unknown(tmp_path, tiny_model_dir):
    pytest.importorskip("pyarrow")
    manifest, rows, _, exported = run_and_export(tmp_path, tiny_model_dir)
    assert manifest["model"]["license"] == "unknown"
    assert [row["output_image_license"] for row in rows] == ["unknown"]
    assert "\nlicense: unknown\ntags:\n" in front_matter((exported / "README.md").read_text())
    assert exported_licences(exported) == [["unknown"]]
