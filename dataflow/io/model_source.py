"""Turning ``hf_model_name_or_path`` into a local folder: use it as is, or download it from the Hub."""

from __future__ import annotations

import os
from typing import Optional

from dataflow.core.errors import ModelLoadError
from dataflow.logger import get_logger

logger = get_logger()

# Only the diffusers-format subfolders: the single-file checkpoint at a repo's root would double the download.
DIFFUSERS_FILES = ["model_index.json", "*/*"]


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
    name = repo_id.split("/")[-1]
    hint = f"Download it elsewhere and pass the local folder instead (--model /path/to/{name})."
    offline = _hub_offline()
    if not offline:  # offline, the one line said below is all there is to say
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
        if offline:
            raise ModelLoadError(f"{repo_id} is not in the Hugging Face cache, and HF_HUB_OFFLINE forbids downloading "
                                 f"it. {hint}") from None
        reason = " ".join(str(exc).split())  # the Hub's messages run over several lines
        raise ModelLoadError(
            f"could not download {repo_id} from the Hugging Face Hub ({type(exc).__name__}: {reason}). {hint}"
        ) from None
    check_pipeline_folder(folder)
    return folder


def _hub_offline() -> bool:
    """True when HF_HUB_OFFLINE forbids downloads (as huggingface_hub reads it)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)
