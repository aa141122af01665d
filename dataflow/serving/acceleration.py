"""The documented import path of the speed options; they live in ``dataflow.serving.diffusers.speed``."""

from dataflow.serving.diffusers.speed.options import (  # noqa: F401
    Acceleration,
    add_acceleration_flags,
)
