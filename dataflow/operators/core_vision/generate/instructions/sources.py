"""Where the images to write instructions for come from: a folder of image files, or any input ``run`` reads
(a JSONL/JSON/CSV/parquet file of rows, parquet shards, a ``save_to_disk`` folder, WebDataset tars).

A folder of images is listed recursively (hidden folders and files left out), sorted by path; each image is a row
``{"images": "<path relative to the folder>"}``. A folder that holds dataset shards is read as that dataset.
"""

from __future__ import annotations

import os
from typing import Iterator, Optional

from dataflow.core.errors import InputError
from dataflow.io.sources import dataset_kind

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def image_files(folder: str) -> list:
    """The image files under ``folder`` (by extension, any case), as paths relative to it, sorted."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.relpath(os.path.join(root, name), folder) for name in names
                     if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS))
    return sorted(found, key=lambda path: path.split(os.sep))


def is_image_folder(path: str) -> bool:
    """True for a folder that is not a dataset input (no shards, no ``save_to_disk`` files)."""
    if not os.path.isdir(path):
        return False
    try:
        dataset_kind(path)
    except InputError:  # a folder without shards: a folder of images, or nothing usable
        return True
    return False


class ImageFolderRows:
    """The rows of a folder of images, read again (listed again) on each pass.

    Args:
        folder: the folder; image paths in the rows are relative to it.
        image_key: the field each row holds its image path in.
    """

    def __init__(self, folder: str, image_key: str = "images"):
        self.folder = folder
        self.image_key = image_key
        self._files: Optional[list] = None

    def files(self) -> list:
        if self._files is None:
            self._files = image_files(self.folder)
            if not self._files:
                raise InputError(f"{self.folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}), parquet shards, "
                                 "tar shards or datasets.save_to_disk dataset")
        return self._files

    def __iter__(self) -> Iterator[dict]:
        return ({self.image_key: path.replace(os.sep, "/")} for path in self.files())

    def count(self) -> int:
        return len(self.files())
