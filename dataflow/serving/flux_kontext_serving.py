"""The documented import path of ``FluxKontextServing``; it lives in ``dataflow.serving.diffusers``."""

from dataflow.serving.diffusers.kontext_serving import DEFAULT_MODEL, FluxKontextServing  # noqa: F401
