"""Utilities kept at the import paths DataFlow-MM documents (``dataflow.utils.storage``)."""
