import pytest

from dataflow.core.reference import SourceRef, content_id, parse_reference


@pytest.mark.parametrize("ref", [
    SourceRef("shards/train-00000.parquet", row=17, column="image", sha256="ab" * 16),
    SourceRef("a b/#odd#.parquet", row=0, column="source image/1&2=3", item=2),
    SourceRef("d/data-00000-of-00001.arrow", row=5, column="image"),
    SourceRef("edit-000001.tar", member="dir/sample 7.source.png"),
])
def test_a_reference_reads_back_as_itself_whatever_characters_its_names_hold(ref):
    assert parse_reference(str(ref)) == ref


@pytest.mark.parametrize("text", [
    "photo.png", "photo#1.png", "shard.parquet", "shard.parquet#", "shard.parquet#row=1",  # no column
    "shard.parquet#row=-1&column=image", "shard.parquet#row=x&column=image", "shard.tar#row=1&column=a",
    "shard.parquet#row=1&column=image&colour=red", "notes.txt#row=1&column=image", None, 7,
])
def test_anything_else_is_a_plain_path(text):
    assert parse_reference(text) is None


def test_the_content_id_is_the_digest_and_a_name_says_where_the_image_was():
    ref = SourceRef("x/train-00003.parquet", row=4, column="images", item=1, sha256="cd" * 16)
    assert content_id(str(ref)) == "sha256:" + "cd" * 16
    assert content_id("photo.png") is None and content_id(SourceRef("a.tar", member="k.jpg")) is None
    assert ref.name == "train-00003-4-1"
    assert SourceRef("a.tar", member="sub/k.source.png").name == "k.source.png"
