"""Core types shared by storage, serving, operators and engines."""

from dataflow.core.errors import DataflowError, InputError, ModelLoadError, RowError, RunInterrupted, ServiceError
from dataflow.core.request import EditRequest, EditResult
from dataflow.core.serving import ImageEditServing

__all__ = [
    "DataflowError",
    "InputError",
    "ModelLoadError",
    "RowError",
    "RunInterrupted",
    "ServiceError",
    "EditRequest",
    "EditResult",
    "ImageEditServing",
]
