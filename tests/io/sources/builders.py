"""Dataset inputs as their real producers write them: ``datasets`` (parquet, save_to_disk) and ``webdataset``."""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

INSTRUCTIONS = ["flip horizontally", "make it grayscale", "rotate 90 degrees", "flip vertically"]
SIZES = [(40, 24), (32, 32), (24, 40)]


def picture(i: int, fmt: str = "PNG") -> bytes:
    """The encoded bytes of sample ``i``: random pixels, one of three sizes."""
    width, height = SIZES[i % len(SIZES)]
    pixels = np.random.default_rng(i).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def samples(n: int) -> list[dict]:
    return [{"bytes": picture(i, "PNG" if i % 2 == 0 else "JPEG"), "instruction": INSTRUCTIONS[i % 4]}
            for i in range(n)]


def image_dataset(n: int, **columns):
    """A ``datasets.Dataset`` with an ``image`` column (Image feature, bytes embedded) and ``instruction``."""
    import datasets

    data = samples(n)
    features = {"image": datasets.Image(), "instruction": datasets.Value("string"),
                **{name: feature for name, (feature, _) in columns.items()}}
    table = {"image": [{"bytes": s["bytes"], "path": None} for s in data],
             "instruction": [s["instruction"] for s in data],
             **{name: values for name, (_, values) in columns.items()}}
    return datasets.Dataset.from_dict(table, features=datasets.Features(features))


def write_parquet_shards(folder, n: int, shards: int = 2, rows_per_group: int = 3) -> list[str]:
    """``n`` samples in ``shards`` parquet files written by ``datasets``, small row groups (several per shard)."""
    os.makedirs(folder, exist_ok=True)
    dataset = image_dataset(n)
    paths = []
    for k in range(shards):
        path = os.path.join(str(folder), f"train-{k:05d}-of-{shards:05d}.parquet")
        dataset.shard(shards, k, contiguous=True).to_parquet(path, batch_size=rows_per_group)
        paths.append(path)
    return paths


def write_webdataset(folder, n: int, per_shard: int = 4, image_ext: str = "jpg") -> list[str]:
    """``n`` samples in tar shards of ``per_shard`` written by ``webdataset.TarWriter``: image, .txt, .json."""
    import webdataset

    os.makedirs(folder, exist_ok=True)
    data = samples(n)
    paths = []
    for start in range(0, n, per_shard):
        path = os.path.join(str(folder), f"edit-{start // per_shard:06d}.tar")
        with webdataset.TarWriter(path) as sink:
            for i in range(start, min(n, start + per_shard)):
                sink.write({"__key__": f"sample{i:06d}", image_ext: data[i]["bytes"],
                            "txt": data[i]["instruction"], "json": {"source": "test", "index": i}})
        paths.append(path)
    return paths
