"""Tiny random pipelines of the Qwen-Image-Edit and FLUX.2 families, saved once per session as local folders."""

from __future__ import annotations

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


@pytest.fixture(params=["qwen-edit-plus", "qwen-edit", "flux2-klein"])
def family_model(request) -> tuple[str, str]:
    """(family name, tiny folder) for each new family's pipelines."""
    fixture = {"qwen-edit-plus": "tiny_qwen_edit_plus_dir", "qwen-edit": "tiny_qwen_edit_dir",
               "flux2-klein": "tiny_flux2_klein_dir"}[request.param]
    family = "FLUX.2" if request.param.startswith("flux2") else "Qwen-Image-Edit"
    return family, request.getfixturevalue(fixture)
