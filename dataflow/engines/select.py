"""Choosing an engine from command-line style options, for the CLI and the seed script alike."""

from __future__ import annotations

from typing import Optional

from dataflow.core.errors import InputError
from dataflow.core.serving import ImageEditServing
from dataflow.engines.local import LocalEngine
from dataflow.engines.multiprocess import MultiProcessEngine, parse_devices, visible_gpus

ENGINES = ("local", "ray")


def select_engine(name: str, serving: ImageEditServing, devices: Optional[str] = None,
                  ray_address: Optional[str] = None, workers: Optional[int] = None, uses_gpu: bool = True):
    """``ray`` -> RayEngine; ``local`` -> one process per device when several are given or visible, else this one.

    Args:
        devices: "0,1" or "cpu,cpu"; default: the visible GPUs (when the backend ``uses_gpu``).
        ray_address: the Ray cluster to join (default: start a local one).
        workers: Ray actors (default: one per GPU of the cluster).
    """
    if name not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(ENGINES)}, got {name!r}")
    if name == "ray":
        from dataflow.engines.ray_engine import RayEngine

        return RayEngine(address=ray_address, num_workers=workers)
    chosen = parse_devices(devices) if devices else (visible_gpus() if uses_gpu else [])
    if len(chosen) > 1:
        return MultiProcessEngine(chosen)
    if devices:  # one device named explicitly: run here, on it
        serving.use_device("cpu" if chosen[0] == "cpu" else f"cuda:{chosen[0]}")
    return LocalEngine()
