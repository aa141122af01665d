"""Models and single files from a local path or the Hub, offline: the errors name what is missing and what to do."""

import pytest

from dataflow.core.errors import ModelLoadError
from dataflow.io.model_source import download_file, hub_revision, resolve_model_folder

pytest.importorskip("huggingface_hub")

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_a_hub_file_comes_from_the_cache_offline(tmp_path):
    snapshot = tmp_path / "models--owner--name" / "snapshots" / COMMIT / "sub"
    snapshot.mkdir(parents=True)
    (snapshot / "x.safetensors").write_bytes(b"weights")
    (tmp_path / "models--owner--name" / "refs").mkdir()
    (tmp_path / "models--owner--name" / "refs" / "main").write_text(COMMIT)
    path = download_file("owner/name", "sub/x.safetensors", cache_dir=str(tmp_path))
    assert open(path, "rb").read() == b"weights" and hub_revision(path) == COMMIT


def test_a_hub_file_missing_offline_says_so_and_what_to_do(tmp_path):
    with pytest.raises(ModelLoadError) as error:
        download_file("owner/name", "x.safetensors", cache_dir=str(tmp_path))
    message = str(error.value)
    assert message == ("x.safetensors of owner/name is not in the Hugging Face cache, and HF_HUB_OFFLINE forbids "
                       "downloading it. Download it elsewhere and pass the local file instead (/path/to/x.safetensors).")


def test_a_model_missing_offline_still_asks_for_a_local_folder(tmp_path):
    with pytest.raises(ModelLoadError, match=r"owner/model is not in the Hugging Face cache.* \(--model /path/to/model\)"):
        resolve_model_folder("owner/model", cache_dir=str(tmp_path))


def test_revisions_are_read_only_from_cache_paths():
    assert hub_revision(f"/c/models--o--n/snapshots/{COMMIT}/f.safetensors") == COMMIT
    assert hub_revision("/ckpt/models/name/f.safetensors") is None
