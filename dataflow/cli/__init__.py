"""The ``dataflow-edit`` command line."""

from dataflow.cli.main import main

__all__ = ["main"]
