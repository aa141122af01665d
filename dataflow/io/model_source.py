"""Turning ``hf_model_name_or_path`` into a local folder: use it as is, or download it from the Hub."""

from __future__ import annotations

import os
from typing import Optional

from dataflow.core.errors import ModelLoadError
from dataflow.logger import get_logger

logger = get_logger()

# Only the diffusers-format subfolders: the single-file checkpoint at a repo's root would double the download. The
# model card (README.md) comes too: its front matter names the model's licence.
DIFFUSERS_FILES = ["model_index.json", "*/*", "README.md"]
CARD_NAME = "README.md"
UNKNOWN_LICENSE = "unknown"


def looks_like_path(name: str) -> bool:
    """True for names users mean as folders (``./x``, ``/x``, ``~/x``, ``x\\y``), false for ``owner/repo`` ids."""
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") != 1


def resolve_model_folder(name_or_path: str, cache_dir: Optional[str] = None, local_dir: Optional[str] = None) -> str:
    """A local folder holding a diffusers pipeline (``model_index.json`` and its component folders).

    A Hub id is downloaded with huggingface_hub into ``local_dir/<repo name>`` when ``local_dir`` is given, else
    into the Hub cache (``cache_dir``). Failures raise ``ModelLoadError`` telling the user to pass a local folder.
    """
    if not name_or_path or not isinstance(name_or_path, str):
        raise ModelLoadError("hf_model_name_or_path is required: a local diffusers folder or a Hub id")
    folder = os.path.expanduser(name_or_path)
    if os.path.isdir(folder):
        check_pipeline_folder(folder)
        return folder
    if looks_like_path(name_or_path):
        raise ModelLoadError(f"model folder not found: {name_or_path}")
    return _download(name_or_path, cache_dir, local_dir)


def check_pipeline_folder(folder: str) -> None:
    if not os.path.isfile(os.path.join(folder, "model_index.json")):
        raise ModelLoadError(
            f"{folder} is not a diffusers pipeline folder (no model_index.json); "
            "pass the folder that pipe.save_pretrained() or a Hub download produced"
        )


def _download(repo_id: str, cache_dir: Optional[str], local_dir: Optional[str]) -> str:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError:
        raise ModelLoadError("downloading a model needs huggingface_hub: pip install 'dataflow-edit[diffusers]'") from None
    target = os.path.join(local_dir, repo_id.split("/")[-1]) if local_dir else None
    hint = f"Download it elsewhere and pass the local folder instead (--hf_model_name_or_path /path/to/{repo_id.split('/')[-1]})."
    logger.info("fetching %s from the Hugging Face Hub (or its local cache)", repo_id)
    try:
        folder = snapshot_download(repo_id, cache_dir=cache_dir, local_dir=target, allow_patterns=DIFFUSERS_FILES)
    except GatedRepoError:
        raise ModelLoadError(
            f"{repo_id} is gated on the Hugging Face Hub: accept its licence on the model page and log in "
            f"(hf auth login), or pass a local folder. {hint}"
        ) from None
    except RepositoryNotFoundError:
        raise ModelLoadError(f"{repo_id} was not found on the Hugging Face Hub (or it is private). {hint}") from None
    except Exception as exc:  # offline mode, no network, HTTP errors: all mean "cannot get it from the Hub"
        raise ModelLoadError(
            f"could not download {repo_id} from the Hugging Face Hub ({type(exc).__name__}: {exc}). {hint}"
        ) from None
    check_pipeline_folder(folder)
    return folder


def card_license(folder: str) -> dict:
    """The licence the model card in ``folder`` declares: ``{"license": ..., "license_name": ...}``.

    It is read from the card's YAML front matter (``license:``; ``license_name:`` names an ``other`` licence, as the
    FLUX [dev] cards do). A folder without a card, or a card that names none, gives ``{"license": "unknown"}``: the
    licence is never guessed.
    """
    path = os.path.join(folder, CARD_NAME)
    if not os.path.isfile(path):
        return {"license": UNKNOWN_LICENSE}
    try:
        from huggingface_hub.repocard import metadata_load

        metadata = metadata_load(path) or {}
    except Exception as exc:  # not installed, unreadable, or front matter that is not YAML: say so, never guess
        logger.warning("cannot read the licence in %s (%s: %s); recording it as unknown", path,
                       type(exc).__name__, exc)
        return {"license": UNKNOWN_LICENSE}
    license_id = metadata.get("license")
    if isinstance(license_id, list):  # the card format allows a list; keep every entry
        license_id = " AND ".join(str(x) for x in license_id)
    info = {"license": str(license_id).strip() if license_id else UNKNOWN_LICENSE}
    if isinstance(metadata.get("license_name"), str):
        info["license_name"] = metadata["license_name"]
    return info


def folder_revision(folder: str) -> Optional[str]:
    """The Hub commit a downloaded folder holds, or None for a folder that was not downloaded from the Hub.

    A download into the Hub cache lives in ``snapshots/<commit>``; one into ``local_dir`` has huggingface_hub's
    record of the commit in ``.cache/huggingface/download/model_index.json.metadata`` (its first line).
    """
    folder = os.path.normpath(os.path.abspath(folder))
    if os.path.basename(os.path.dirname(folder)) == "snapshots":
        return os.path.basename(folder)
    record = os.path.join(folder, ".cache", "huggingface", "download", "model_index.json.metadata")
    try:
        with open(record, encoding="utf-8") as handle:
            commit = handle.readline().strip()
    except OSError:
        return None
    return commit or None


def license_label(info: dict) -> str:
    """One string for a licence (``card_license``'s dict): the name of an ``other`` licence, else its id."""
    license_id = info.get("license") or UNKNOWN_LICENSE
    name = info.get("license_name")
    return name if license_id == "other" and name else license_id
