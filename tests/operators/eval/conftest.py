"""Fixtures of the metric tests: tiny local models (built once per session), a local judge API, test images."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from dataflow.operators.core_vision.eval.metric import ScoreItem


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def item(source, edited, instruction: str = "make the sky red", key: str = "row/0") -> ScoreItem:
    return ScoreItem(key=key, sources=(source,) if source is not None else (), instruction=instruction,
                     edited=edited)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run on one thread: on a busy machine torch's thread pool makes each 32-wide layer ~100x
    slower. Restored after each test; torch is only touched when a test has already imported it."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> str:
    pytest.importorskip("transformers")
    from tests.operators.eval.tiny_models import build_tiny_clip

    return build_tiny_clip(str(tmp_path_factory.mktemp("metric-models") / "tiny-clip"))


@pytest.fixture(scope="session")
def tiny_dino_dir(tmp_path_factory) -> str:
    pytest.importorskip("transformers")
    from tests.operators.eval.tiny_models import build_tiny_dino

    return build_tiny_dino(str(tmp_path_factory.mktemp("metric-models") / "tiny-dino"))


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory) -> str:
    pytest.importorskip("transformers")
    from tests.operators.eval.tiny_models import build_tiny_vlm

    return build_tiny_vlm(str(tmp_path_factory.mktemp("metric-models") / "tiny-vlm"))


@pytest.fixture
def chat_server():
    pytest.importorskip("httpx")
    from tests.operators.eval.chat_server import ChatServer

    server = ChatServer().start()
    yield server
    server.stop()
