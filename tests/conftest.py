"""Shared fixtures. No test touches the network: the Hub is switched off before anything imports it."""

from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402


def write_image(path, width: int, height: int, seed: int = 0) -> str:
    """A random RGB picture of the given size, saved in the format its extension names."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(str(path))
    return str(path)


def write_jsonl(path, rows) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return str(path)


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def edit_row(image: str, instruction: str, **extra) -> dict:
    return {"images": image, "conversations": [{"role": "user", "content": instruction}], **extra}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny random FLUX.1 Kontext pipeline saved as a local diffusers folder."""
    pytest.importorskip("diffusers")
    from tests.tiny_kontext import build_tiny_kontext

    return build_tiny_kontext(str(tmp_path_factory.mktemp("models") / "tiny-kontext"))


@pytest.fixture
def mixed_images(tmp_path) -> dict[str, str]:
    """A wide, a square and a tall input image."""
    return {
        "wide": write_image(tmp_path / "wide.png", 200, 100, seed=1),
        "square": write_image(tmp_path / "square.jpg", 120, 120, seed=2),
        "tall": write_image(tmp_path / "tall.webp", 90, 180, seed=3),
    }
