"""``ModelMetric``: the base of metrics backed by a ``transformers`` model (CLIP, DINOv2, a local VLM judge).

It holds what they share: the model loads on the first ``score`` (once, behind a lock), from a local folder or a
Hub id, onto the metric's device (CUDA when available, else CPU, unless ``use_device`` or ``device`` says
otherwise); a metric pickled into a worker travels without its model and loads its own there; ``score`` splits
its items into batches of ``batch_size``.
"""

from __future__ import annotations

import os
import sys
import threading
from abc import abstractmethod
from typing import Any, Optional, Sequence

from dataflow.core.errors import ModelLoadError
from dataflow.core.validation import check_positive_int
from dataflow.io.model_source import looks_like_path
from dataflow.logger import get_logger
from dataflow.operators.core_vision.eval.metric import Metric, ScoreItem, ScoreResult

logger = get_logger()


def import_torch_transformers(metric: str) -> tuple[Any, Any]:
    """torch and transformers, or a ``ModelLoadError`` saying how to install them."""
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise ModelLoadError(
            f"the {metric} metric needs torch and transformers ({exc}). Install torch for your machine, then "
            "pip install 'dataflow-edit[diffusers,eval]'."
        ) from None
    return torch, transformers


def default_device(torch: Any) -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_model_name(model: Any, option: str = "model") -> Optional[str]:
    """``ModelLoadError`` if ``model`` names a local folder that holds no model; a note for a Hub id, else None."""
    if not isinstance(model, str) or not model.strip():
        raise ModelLoadError(f"{option} must be a local model folder or a Hugging Face Hub id, got {model!r}")
    folder = os.path.expanduser(model)
    if os.path.isdir(folder):
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise ModelLoadError(f"{model} holds no config.json; pass the folder that save_pretrained() or a Hub "
                                 "download produced")
        return None
    if looks_like_path(model):
        raise ModelLoadError(f"model folder not found: {model}")
    return f"{model} will be fetched from the Hugging Face Hub (or its local cache) when scoring starts"


def dtype_option(transformers: Any, dtype: Any) -> dict:
    """The ``from_pretrained`` keyword for a dtype: ``dtype`` since transformers 4.56, ``torch_dtype`` before."""
    from packaging.version import Version

    return {"dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype": dtype}


def load_pretrained(loader: Any, model: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(model, **kwargs)``; any failure becomes a ``ModelLoadError`` that says what to do."""
    check_model_name(model)
    source = os.path.expanduser(model) if os.path.isdir(os.path.expanduser(model)) else model
    try:
        return loader.from_pretrained(source, **kwargs)
    except Exception as exc:  # offline, gated, missing files, a wrong architecture: none of it can be scored
        name = getattr(loader, "__name__", str(loader))
        hint = "" if os.path.isdir(source) else (
            f" If the machine cannot reach the Hugging Face Hub (or {model} is gated), download it elsewhere and "
            "pass the local folder instead."
        )
        raise ModelLoadError(f"could not load {name} from {model} ({type(exc).__name__}: {exc}).{hint}") from None


class LazyModel:
    """A ``transformers`` model (``_net``) and its processor held lazily behind ``_lock`` on ``device``: moved by
    ``use_device``, dropped by ``close``, and left behind when pickled, so that a worker loads its own. Its users
    (the local metrics, the local instruction writer) set the four attributes in their ``__init__``."""

    _lock: threading.Lock
    _net: Any
    _processor: Any
    device: Optional[str]

    def use_device(self, device: str) -> None:
        with self._lock:
            self.device = device
            if self._net is not None:
                self._net = self._net.to(device)

    def close(self) -> None:
        """Drop the model and hand its cached accelerator memory back."""
        with self._lock:
            self._net = self._processor = None
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __getstate__(self) -> dict:
        """The configuration only: a worker loads its own model."""
        state = dict(self.__dict__)
        state.update(_lock=None, _net=None, _processor=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class ModelMetric(LazyModel, Metric):
    """A metric whose model loads lazily, once, and runs on one device.

    Args:
        model: a local folder (as ``save_pretrained`` writes it) or a Hugging Face Hub id.
        batch_size: items per forward pass.
        device: "cuda", "cuda:1", "cpu" ...; default CUDA when available, else CPU. ``use_device`` overrides it.
        dtype: a torch dtype or its name ("float32", "bfloat16"); default ``default_dtype(device)``.
    """

    model_types: tuple = ()  # config.model_type prefixes the metric can use; empty: whatever the loader takes

    def __init__(self, model: str, *, batch_size: int = 16, device: Optional[str] = None, dtype: Any = None):
        check_positive_int(batch_size=batch_size)
        check_model_name(model)
        self.model = model
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self._lock = threading.Lock()
        self._net: Any = None  # the torch module
        self._processor: Any = None

    # -- loading -------------------------------------------------------------------------------------------
    def default_dtype(self, torch: Any, device: str) -> Any:
        """float32: embedding metrics are small, and float32 keeps their values alike on every device."""
        return torch.float32

    @abstractmethod
    def load_model(self, transformers: Any, device: str, dtype: Any) -> tuple[Any, Any]:
        """(torch module, processor) built from ``self.model``; the base moves the module and sets eval mode."""

    def loaded(self) -> tuple[Any, Any]:
        """The (module, processor) pair, loading it on first use."""
        with self._lock:
            if self._net is None:
                torch, transformers = import_torch_transformers(self.name)
                device = self.device or default_device(torch)
                dtype = self.dtype or self.default_dtype(torch, device)
                if isinstance(dtype, str):
                    dtype = getattr(torch, dtype)
                logger.info("loading the %s metric's model %s on %s (%s)", self.name, self.model, device,
                            str(dtype).replace("torch.", ""))
                self.check_model_type(transformers)
                net, processor = self.load_model(transformers, device, dtype)
                self._net, self._processor = net.to(device).eval(), processor
                self.device = device
            return self._net, self._processor

    def check_model_type(self, transformers: Any) -> None:
        """``ModelLoadError`` if the folder's config is not of ``model_types``: read before the weights, so that a
        wrong folder fails at once instead of loading as a randomly initialised model."""
        if self.model_types:
            found = getattr(load_pretrained(transformers.AutoConfig, self.model), "model_type", None) or "unknown"
            if not found.startswith(self.model_types):
                raise ModelLoadError(f"{self.model} holds a {found!r} model; the {self.name} metric needs "
                                     f"{' or '.join(repr(t) for t in self.model_types)}")

    def check(self) -> Optional[str]:
        return check_model_name(self.model)

    def check_dependencies(self) -> None:
        import_torch_transformers(self.name)

    # -- scoring -------------------------------------------------------------------------------------------
    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        """One result per item, in order, computed ``batch_size`` items at a time."""
        results: list[ScoreResult] = []
        for start in range(0, len(items), self.batch_size):
            results += self.score_batch(items[start:start + self.batch_size])
        return results

    @abstractmethod
    def score_batch(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        """Results of at most ``batch_size`` items."""

    def fingerprint(self) -> dict:
        dtype = "auto" if self.dtype is None else str(self.dtype).replace("torch.", "")
        return {"metric": self.name, "model": self.model, "dtype": dtype}

