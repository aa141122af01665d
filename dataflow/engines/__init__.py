"""Engines run an edit job: in this process, one process per GPU, or on a Ray cluster.

Each engine has ``run(job, show_progress=None) -> (rows, summary)`` and shares the driver in ``driver.py``.
"""

from dataflow.engines.local import LocalEngine
from dataflow.engines.multiprocess import MultiProcessEngine


def RayEngine(*args, **kwargs):  # noqa: N802 - a lazy alias, so that importing engines never imports Ray
    """``dataflow.engines.ray_engine.RayEngine``; needs the ``[ray]`` extra."""
    from dataflow.engines.ray_engine import RayEngine as engine

    return engine(*args, **kwargs)


__all__ = ["LocalEngine", "MultiProcessEngine", "RayEngine"]
