"""The documented import path of the classic backend; it lives in ``dataflow.serving.classic``."""

from dataflow.serving.classic.serving import ClassicEditServing  # noqa: F401
