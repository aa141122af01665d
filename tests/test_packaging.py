"""The package metadata as setuptools builds it: no deprecation warnings, the license as an SPDX expression, and
the version that ``dataflow-edit --version`` prints."""

import os
import shutil
import subprocess
import sys

import dataflow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_metadata_builds_without_warnings(tmp_path):
    """`make demo` printed setuptools' warning that a `project.license` table is deprecated, three times."""
    for name in ("pyproject.toml", "README.md", os.path.join("dataflow", "__init__.py")):
        os.makedirs(tmp_path / "src" / os.path.dirname(name), exist_ok=True)
        shutil.copy(os.path.join(REPO, name), tmp_path / "src" / name)
    (tmp_path / "meta").mkdir()
    build = ("from setuptools import build_meta; "
             f"print(build_meta.prepare_metadata_for_build_wheel({str(tmp_path / 'meta')!r}))")
    result = subprocess.run([sys.executable, "-W", "always", "-c", build], cwd=tmp_path / "src", capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "deprecated" not in result.stderr.lower(), result.stderr
    metadata = (tmp_path / "meta" / result.stdout.strip().splitlines()[-1] / "METADATA").read_text(encoding="utf-8")
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert f"Version: {dataflow.__version__}" in metadata.splitlines()
