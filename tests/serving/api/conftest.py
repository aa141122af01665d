import os

import pytest

from tests.serving.api.photo import write_photo_jpeg
from tests.serving.api.server import edit_server  # noqa: F401  (the fixture)


@pytest.fixture(scope="session")
def camera_jpeg(tmp_path_factory) -> str:
    """A 12-megapixel photo-like JPEG of about 2.5 MB, made once per session."""
    path = write_photo_jpeg(tmp_path_factory.mktemp("photo") / "camera.jpg")
    assert 2.2e6 < os.path.getsize(path) < 2.9e6, os.path.getsize(path)
    return path
