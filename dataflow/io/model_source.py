"""Turning ``hf_model_name_or_path`` (or a LoRA's source) into local files: use them as they are, or download them
from the Hub, with one set of errors for offline, gated and missing repositories."""

from __future__ import annotations

import contextlib
import os
import re
from typing import Iterator, Optional

from dataflow.core.errors import ModelLoadError
from dataflow.logger import get_logger

logger = get_logger()

# Only the diffusers-format subfolders: the single-file checkpoint at a repo's root would double the download. The
# model card (README.md) comes too: its front matter names the model's licence.
DIFFUSERS_FILES = ["model_index.json", "*/*", "README.md"]
CARD_NAME = "README.md"
UNKNOWN_LICENSE = "unknown"
_SNAPSHOT = re.compile(r"[\\/]snapshots[\\/]([0-9a-f]{40})[\\/]")


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


def download_file(repo_id: str, filename: str, cache_dir: Optional[str] = None,
                  local_dir: Optional[str] = None) -> str:
    """One file of a Hub repository (``filename`` may name a subfolder: ``sub/x.safetensors``), downloaded once
    into ``local_dir/<repo name>`` when ``local_dir`` is given, else into the Hub cache (``cache_dir``)."""
    hf_hub_download = _hub().hf_hub_download
    target = os.path.join(local_dir, repo_id.split("/")[-1]) if local_dir else None
    hint = f"Download it elsewhere and pass the local file instead (/path/to/{os.path.basename(filename)})."
    if not _hub_offline():
        logger.info("fetching %s from %s on the Hugging Face Hub (or its local cache)", filename, repo_id)
    with hub_errors(repo_id, hint, filename):
        return hf_hub_download(repo_id, filename, cache_dir=cache_dir, local_dir=target)


def list_repo_files(repo_id: str) -> list[str]:
    """The files of a Hub repository (needs the network: the Hub cache does not record what it left out)."""
    hint = "Name the file in the repository, or download it elsewhere and pass the local file."
    with hub_errors(repo_id, hint):
        return list(_hub().list_repo_files(repo_id))


def hub_revision(path: str) -> Optional[str]:
    """The commit a file downloaded into the Hub cache comes from (``.../snapshots/<commit>/...``), else None."""
    match = _SNAPSHOT.search(path)
    return match.group(1) if match else None


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise ModelLoadError("downloading from the Hugging Face Hub needs huggingface_hub: "
                             "pip install 'dataflow-edit[diffusers]'") from None
    return huggingface_hub


@contextlib.contextmanager
def hub_errors(repo_id: str, hint: str, filename: Optional[str] = None) -> Iterator[None]:
    """Turn huggingface_hub's errors into one ``ModelLoadError`` line: gated, not found, missing file, offline."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    what = f"{filename} of {repo_id}" if filename else repo_id
    try:
        yield
    except GatedRepoError:
        raise ModelLoadError(
            f"{repo_id} is gated on the Hugging Face Hub: accept its licence on the model page and log in "
            f"(hf auth login), or pass a local copy. {hint}"
        ) from None
    except RepositoryNotFoundError:
        raise ModelLoadError(f"{repo_id} was not found on the Hugging Face Hub (or it is private). {hint}") from None
    except LocalEntryNotFoundError as exc:  # offline, or no network, and not in the cache
        if _hub_offline():
            raise ModelLoadError(f"{what} is not in the Hugging Face cache, and HF_HUB_OFFLINE forbids downloading "
                                 f"it. {hint}") from None
        raise ModelLoadError(
            f"could not download {what} from the Hugging Face Hub, and it is not in the local cache "
            f"({type(exc).__name__}: {_one_line(exc)}). {hint}"
        ) from None
    except EntryNotFoundError:
        raise ModelLoadError(f"{repo_id} on the Hugging Face Hub has no file {filename}") from None
    except Exception as exc:  # offline mode, no network, HTTP errors: all mean "cannot get it from the Hub"
        if _hub_offline():
            raise ModelLoadError(f"{what} is not in the Hugging Face cache, and HF_HUB_OFFLINE forbids downloading "
                                 f"it. {hint}") from None
        raise ModelLoadError(
            f"could not download {what} from the Hugging Face Hub ({type(exc).__name__}: {_one_line(exc)}). {hint}"
        ) from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())  # the Hub's messages run over several lines


def _hub_offline() -> bool:
    """True when HF_HUB_OFFLINE forbids downloads (as huggingface_hub reads it)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _download(repo_id: str, cache_dir: Optional[str], local_dir: Optional[str]) -> str:
    snapshot_download = _hub().snapshot_download
    target = os.path.join(local_dir, repo_id.split("/")[-1]) if local_dir else None
    hint = f"Download it elsewhere and pass the local folder instead (--model /path/to/{repo_id.split('/')[-1]})."
    if not _hub_offline():  # offline, the one line of hub_errors is all there is to say
        logger.info("fetching %s from the Hugging Face Hub (or its local cache)", repo_id)
    with hub_errors(repo_id, hint):
        folder = snapshot_download(repo_id, cache_dir=cache_dir, local_dir=target, allow_patterns=DIFFUSERS_FILES)
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
