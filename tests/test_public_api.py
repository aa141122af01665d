"""Every import path users rely on still imports: DataFlow-MM's documented names, the older module paths the docs
name, and every ``from dataflow... import ...`` line shown in the README and docs/."""

from __future__ import annotations

import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

DOCUMENTED = [
    ("dataflow.utils.storage", "FileStorage"),
    ("dataflow.io", "ImageIO"),
    ("dataflow.serving.local_image_gen_serving", "LocalImageGenServing"),
    ("dataflow.serving.api_image_gen_serving", "APIImageGenServing"),
    ("dataflow.serving.flux_kontext_serving", "FluxKontextServing"),
    ("dataflow.serving.classic_edit_serving", "ClassicEditServing"),
    ("dataflow.serving.acceleration", "Acceleration"),
    ("dataflow.serving.acceleration", "add_acceleration_flags"),
    ("dataflow.serving.diffusers.select", "diffusers_serving"),
    ("dataflow.operators.core_vision", "PromptedImageEditGenerator"),
    ("dataflow.operators.core_vision", "ImageEditEvaluator"),
    ("dataflow.operators.core_vision", "ImageEditFilter"),
    ("dataflow.exporters", "export"),
    ("dataflow.cli.exits", "run_main"),
]

_FROM_IMPORT = re.compile(r"^\s*from (dataflow(?:\.\w+)*) import ([\w, ]+)$", re.MULTILINE)


def documented_in_docs() -> list[tuple[str, str]]:
    found = set()
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for module, names in _FROM_IMPORT.findall(page.read_text(encoding="utf-8")):
            found.update((module, name.strip()) for name in names.split(",") if name.strip())
    return sorted(found)


@pytest.mark.parametrize("module, name", DOCUMENTED + documented_in_docs())
def test_documented_import_path_imports(module, name):
    assert getattr(importlib.import_module(module), name) is not None


def test_old_paths_are_the_same_objects_as_the_new_ones():
    from dataflow.serving.acceleration import Acceleration
    from dataflow.serving.classic.serving import ClassicEditServing
    from dataflow.serving.classic_edit_serving import ClassicEditServing as OldClassic
    from dataflow.serving.diffusers.kontext_serving import FluxKontextServing
    from dataflow.serving.diffusers.speed.options import Acceleration as SpeedOptions
    from dataflow.serving.flux_kontext_serving import FluxKontextServing as OldKontext

    assert Acceleration is SpeedOptions and OldClassic is ClassicEditServing and OldKontext is FluxKontextServing
