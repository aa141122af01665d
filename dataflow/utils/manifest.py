"""``run.json``: where a run's inputs live, kept beside its output so later steps need only the output folder.

The gallery, ``dataflow-edit score`` and ``filter`` read it to resolve the rows' relative paths: source images
against the input file's folder, edited images against the working directory the run was started in.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from dataflow.core.errors import RowError
from dataflow.io.atomic import atomic_open
from dataflow.io.sources import input_folder
from dataflow.logger import get_logger

logger = get_logger()

MANIFEST_NAME = "run.json"
KEYS = ("image_key", "conversation_key", "output_key")


def write_manifest(folder: str, manifest: dict) -> None:
    """Write ``manifest`` (``input``, ``cwd``, ``backend`` and the field names) as ``folder/run.json``."""
    with atomic_open(os.path.join(folder, MANIFEST_NAME)) as handle:
        json.dump(manifest, handle, indent=2)


def read_manifest(folder: str) -> dict:
    """``folder/run.json`` as a dict; empty when absent, and empty with a warning when unreadable."""
    path = os.path.join(folder, MANIFEST_NAME)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        logger.warning("ignoring unreadable run manifest %s: %s", path, exc)
        return {}
    if not isinstance(manifest, dict):
        logger.warning("ignoring run manifest %s: expected a JSON object", path)
        return {}
    return manifest


@dataclass
class RunFolders:
    """The folders a run's relative paths are meant against, and its field names (None: unknown)."""

    input_dir: Optional[str] = None
    run_dir: Optional[str] = None
    keys: dict = field(default_factory=dict)


def run_folders(output_file: str) -> RunFolders:
    """What the manifest beside ``output_file`` says about its run."""
    folder = os.path.dirname(os.path.abspath(output_file))
    manifest = read_manifest(folder)
    cwd, source = _text(manifest.get("cwd")), _text(manifest.get("input"))
    keys = {k: manifest[k] for k in KEYS if _text(manifest.get(k))}
    input_dir = input_folder(os.path.join(cwd or folder, source)) if source else None
    return RunFolders(input_dir, cwd, keys)


def find_output_image(value: Any, run_dir: str, output_dir: str, what: str = "output image") -> str:
    """An output image's path as the run wrote it, made absolute; ``RowError`` saying where it looked.

    Relative paths are tried against the run's working directory, then the output file's folder. Last, for a
    folder that was moved after the run, the path's trailing parts are tried under the output file's folder
    (``out/sample_0/sample_0_0.png`` is found as ``sample_0/sample_0_0.png``).
    """
    if not isinstance(value, str) or not value.strip():
        raise RowError(f"not an image path: {value!r}")
    path = os.path.expanduser(value)
    direct = [path] if os.path.isabs(path) else [os.path.join(run_dir, path), os.path.join(output_dir, path)]
    parts = [p for p in os.path.normpath(path).split(os.sep) if p not in ("", ".", "..")]
    moved = [os.path.join(output_dir, *parts[i:]) for i in range(1, len(parts))]
    for candidate in direct + moved:
        if os.path.isfile(candidate):
            return os.path.normpath(candidate)
    looked = ", ".join(dict.fromkeys(os.path.normpath(c) for c in direct))
    raise RowError(f"{what} not found: {value} (looked for {looked})")


def _text(value: Any) -> Optional[str]:
    return value if isinstance(value, str) and value.strip() else None
