"""Choosing an engine from command-line style options, for the CLI and the seed script alike."""

from __future__ import annotations

from typing import Any, Optional

from dataflow.core.errors import InputError
from dataflow.core.flags import flag_adder
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


def add_engine_flags(parser: Any, separator: str = "-") -> None:
    """The engine flags, spelled ``--ray-address`` (the CLI) or ``--ray_address`` (``separator="_"``, the seed
    script); ``engine_from_flags`` reads them back."""
    add = flag_adder(parser, separator)
    add("engine", choices=ENGINES, default="local",
        help="local: this machine (one process per GPU when several are visible); ray: a Ray cluster")
    add("devices", default=None, help="local engine: GPU ids (0,1,...) or cpu,cpu; default: the visible GPUs")
    add("ray_address", default=None, help="Ray cluster address (default: start a local Ray)")
    add("workers", type=int, default=None, help="Ray actors (default: one per GPU in the cluster)")


def engine_from_flags(args: Any, serving: ImageEditServing, uses_gpu: bool = True):
    """``select_engine`` with the flags ``add_engine_flags`` defines, as parsed."""
    return select_engine(args.engine, serving, args.devices, args.ray_address, args.workers, uses_gpu=uses_gpu)
