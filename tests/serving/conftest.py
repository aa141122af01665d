"""Tiny random pipelines of every family but FLUX.1 Kontext (``tests/conftest.py``), saved once per session as
local folders."""

from __future__ import annotations

import os

import pytest


def _needs_qwen_processor():
    pytest.importorskip("diffusers")
    pytest.importorskip("torchvision", reason="Qwen2VLProcessor needs torchvision (make test installs it)")


@pytest.fixture(scope="session")
def tiny_qwen_edit_plus_dir(tmp_path_factory) -> str:
    """A tiny ``QwenImageEditPlusPipeline`` (the Qwen-Image-Edit-2509/2511 layout)."""
    _needs_qwen_processor()
    from tests.tiny_qwen_edit import build_tiny_qwen_edit

    return build_tiny_qwen_edit(str(tmp_path_factory.mktemp("models") / "tiny-qwen-edit-plus"), plus=True)


@pytest.fixture(scope="session")
def tiny_qwen_edit_dir(tmp_path_factory) -> str:
    """A tiny ``QwenImageEditPipeline`` (the first Qwen-Image-Edit: one input image)."""
    _needs_qwen_processor()
    from tests.tiny_qwen_edit import build_tiny_qwen_edit

    return build_tiny_qwen_edit(str(tmp_path_factory.mktemp("models") / "tiny-qwen-edit"), plus=False)


@pytest.fixture(scope="session")
def tiny_flux2_klein_dir(tmp_path_factory) -> str:
    """A tiny step-distilled ``Flux2KleinPipeline`` (FLUX.2 [klein] 4B / 9B layout)."""
    pytest.importorskip("diffusers")
    from tests.tiny_flux2 import build_tiny_flux2_klein

    return build_tiny_flux2_klein(str(tmp_path_factory.mktemp("models") / "tiny-flux2-klein"))


@pytest.fixture(scope="session")
def tiny_longcat_dir(tmp_path_factory) -> str:
    """A tiny ``LongCatImageEditPipeline`` (LongCat-Image-Edit)."""
    _needs_qwen_processor()
    from tests.tiny_longcat import build_tiny_longcat

    return build_tiny_longcat(str(tmp_path_factory.mktemp("models") / "tiny-longcat-image-edit"))


@pytest.fixture(scope="session")
def tiny_longcat_turbo_dir(tiny_longcat_dir, tmp_path_factory) -> str:
    """The same folder under a Turbo name (a link), which is how LongCat-Image-Edit-Turbo is recognised."""
    link = tmp_path_factory.mktemp("models") / "LongCat-Image-Edit-Turbo"
    os.symlink(tiny_longcat_dir, link)
    return str(link)


@pytest.fixture(scope="session")
def tiny_qwen_image21_dir(tmp_path_factory) -> str:
    """A tiny ``QwenImage21Pipeline`` (Qwen-Image-2.1)."""
    _needs_qwen_processor()
    from tests.tiny_qwen_image21 import build_tiny_qwen_image21

    return build_tiny_qwen_image21(str(tmp_path_factory.mktemp("models") / "tiny-qwen-image-2.1"))


@pytest.fixture(scope="session")
def tiny_joyai_dir(tmp_path_factory) -> str:
    """A tiny ``JoyImageEditPipeline`` (JoyAI-Image-Edit: one input image)."""
    _needs_qwen_processor()
    from tests.tiny_joyai import build_tiny_joyai

    return build_tiny_joyai(str(tmp_path_factory.mktemp("models") / "tiny-joyai-image-edit"), plus=False)


@pytest.fixture(scope="session")
def tiny_joyai_plus_dir(tmp_path_factory) -> str:
    """A tiny ``JoyImageEditPlusPipeline`` (JoyAI-Image-Edit-Plus: 1-5 input images)."""
    _needs_qwen_processor()
    from tests.tiny_joyai import build_tiny_joyai

    return build_tiny_joyai(str(tmp_path_factory.mktemp("models") / "tiny-joyai-image-edit-plus"), plus=True)


# (family name, fixture of its tiny folder) for every pipeline the shared serving runs besides FLUX.1 Kontext
FAMILY_MODELS = {
    "qwen-edit-plus": ("Qwen-Image-Edit", "tiny_qwen_edit_plus_dir"),
    "qwen-edit": ("Qwen-Image-Edit", "tiny_qwen_edit_dir"),
    "flux2-klein": ("FLUX.2", "tiny_flux2_klein_dir"),
    "longcat": ("LongCat-Image-Edit", "tiny_longcat_dir"),
    "qwen-image21": ("Qwen-Image-2.1", "tiny_qwen_image21_dir"),
    "joyai": ("JoyAI-Image-Edit", "tiny_joyai_dir"),
    "joyai-plus": ("JoyAI-Image-Edit", "tiny_joyai_plus_dir"),
}


@pytest.fixture(params=list(FAMILY_MODELS))
def family_model(request) -> tuple[str, str]:
    """(family name, tiny folder) for each family's pipelines."""
    family, fixture = FAMILY_MODELS[request.param]
    return family, request.getfixturevalue(fixture)
