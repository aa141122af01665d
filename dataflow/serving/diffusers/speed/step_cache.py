"""Step caching through cache-dit's DBCache (opt-in, lossy): denoising steps that change little reuse the residual
of the transformer's later blocks instead of computing them.

``--cache dbcache[:PRESET]`` picks one of the presets below. DBCache always computes the first ``Fn`` blocks (and
the last ``Bn``); on a cacheable step it skips the ones between and adds their cached residual. The threshold
presets cache a step when the first blocks' output moved less than ``threshold`` (relative L1) since the last
computed step, after ``warmup`` computed steps and at most ``max_continuous`` cached steps in a row; the
``taylorseer`` preset also extrapolates the cached residual (TaylorSeer, order 1). The ``static-*`` presets follow
a fixed schedule instead (cache-dit's predefined step masks, ``cache_dit.steps_mask``): a known number of steps is
cached whatever the weights, which is what a benchmark with random weights needs, where a threshold never fires.

cache-dit is applied to the transformer alone (its transformer-only interface: ``enable_cache(transformer)``, then
``refresh_context`` before every pipeline call with the call's number of steps), so the pipeline class is left as
it is. cache-dit is optional: ``pip install 'dataflow-edit[cache]'``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Optional

from dataflow.core.errors import InputError
from dataflow.logger import get_logger

logger = get_logger()

METHOD = "dbcache"
DEFAULT_PRESET = "balanced"
INSTALL_HINT = "pip install 'dataflow-edit[cache]' (or pip install cache-dit)"


@dataclass(frozen=True)
class CachePreset:
    """DBCache settings, named after cache-dit's ``DBCacheConfig`` fields where they are one.

    Args:
        fn: ``Fn_compute_blocks``: blocks always computed first; their output decides whether to cache.
        bn: ``Bn_compute_blocks``: blocks always computed last, correcting the cached residual.
        warmup: ``max_warmup_steps``: the first steps, always computed.
        max_continuous: ``max_continuous_cached_steps``: cached steps in a row at most (-1: no limit).
        threshold: ``residual_diff_threshold``: cache when the first blocks' output changed less than this.
        taylorseer_order: extrapolate the cached residual with TaylorSeer of this order (None: reuse it as is).
        schedule: a cache-dit step-mask policy ("slow", "medium", "fast", "ultra"): cache the steps it marks,
            whatever the threshold (None: decide by the threshold).
    """

    fn: int
    bn: int = 0
    warmup: int = 4
    max_continuous: int = -1
    threshold: float = 0.08
    taylorseer_order: Optional[int] = None
    schedule: Optional[str] = None

    def describe(self) -> str:
        """The settings in cache-dit's short notation, e.g. ``F8B0 W4 MC3 R0.12``."""
        if self.schedule:
            return f"F{self.fn}B{self.bn}, fixed schedule {self.schedule}"
        text = f"F{self.fn}B{self.bn} W{self.warmup} MC{max(self.max_continuous, 0)} R{self.threshold}"
        return text + (f" TaylorSeer O{self.taylorseer_order}" if self.taylorseer_order else "")


# The threshold presets are configurations cache-dit measured on FLUX.1-dev (DrawBench, 50 steps; figures in
# docs/performance.md). "MC0" there means no limit on consecutive cached steps.
PRESETS = {
    "quality": CachePreset(fn=8, warmup=4, threshold=0.08),
    "balanced": CachePreset(fn=8, warmup=4, max_continuous=3, threshold=0.12),
    "fast": CachePreset(fn=4, warmup=4, max_continuous=4, threshold=0.12),
    "taylorseer": CachePreset(fn=1, warmup=4, max_continuous=4, threshold=0.2, taylorseer_order=1),
    **{f"static-{policy}": CachePreset(fn=1, schedule=policy) for policy in ("slow", "medium", "fast", "ultra")},
}


def parse_cache(spec: str) -> str:
    """``spec`` ("dbcache" or "dbcache:PRESET") in its canonical form, "dbcache:PRESET"; InputError otherwise."""
    if not isinstance(spec, str):
        raise InputError(f"cache must be a string such as 'dbcache' or 'dbcache:fast', got {spec!r}")
    method, _, preset = spec.strip().lower().partition(":")
    if method != METHOD:
        raise InputError(f"unknown cache method {method!r} in {spec!r}: the only one is {METHOD} "
                         f"({METHOD} or {METHOD}:PRESET)")
    preset = preset or DEFAULT_PRESET
    if preset not in PRESETS:
        raise InputError(f"unknown {METHOD} preset {preset!r} in {spec!r}; choose one of {', '.join(PRESETS)}")
    return f"{METHOD}:{preset}"


def preset_of(spec: str) -> CachePreset:
    """The preset a canonical spec names."""
    return PRESETS[parse_cache(spec).partition(":")[2]]


def describe(spec: str) -> str:
    """What the run's fingerprint records: the spec and the settings it stands for."""
    return f"{parse_cache(spec)} ({preset_of(spec).describe()})"


def missing_reason() -> Optional[str]:
    """Why step caching cannot be used here (cache-dit is not installed), or None."""
    if importlib.util.find_spec("cache_dit") is None:
        return f"--cache needs cache-dit, which is not installed: {INSTALL_HINT}"
    return None


def _cache_dit():
    reason = missing_reason()
    if reason:
        raise InputError(reason)
    import cache_dit

    return cache_dit


def schedule_mask(policy: str, steps: int) -> list[int]:
    """cache-dit's predefined step mask for ``steps`` (1: compute, 0: cache), or every step computed when it has
    none for that many steps (it defines masks for 4, 6 and 8 or more)."""
    try:
        return list(_cache_dit().steps_mask(mask_policy=policy, total_steps=steps))
    except (AssertionError, ValueError) as exc:
        logger.warning("cache-dit has no %s step schedule for %d steps (%s); computing every step", policy, steps,
                       exc)
        return [1] * steps


def cache_configs(spec: str, steps: Optional[int]) -> dict:
    """cache-dit's ``cache_config`` (and ``calibrator_config`` for TaylorSeer) for ``spec`` and a call of ``steps``
    steps (None: not known yet)."""
    cache_dit = _cache_dit()
    preset = preset_of(spec)
    settings = dict(Fn_compute_blocks=preset.fn, Bn_compute_blocks=preset.bn, num_inference_steps=steps)
    if preset.schedule and steps is None:  # laid out per call (refresh_step_cache); until then nothing is cached
        settings.update(residual_diff_threshold=0.0)
    elif preset.schedule:
        settings.update(steps_computation_mask=schedule_mask(preset.schedule, steps),
                        steps_computation_policy="static")
    else:
        settings.update(max_warmup_steps=preset.warmup, max_continuous_cached_steps=preset.max_continuous,
                        residual_diff_threshold=preset.threshold)
    configs: dict = {"cache_config": cache_dit.DBCacheConfig(**settings)}
    if preset.taylorseer_order:
        configs["calibrator_config"] = cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=preset.taylorseer_order)
    return configs


def enable_step_cache(transformer: Any, spec: str) -> str:
    """Wrap ``transformer``'s blocks in cache-dit's DBCache; returns what was applied, for the log. Each pipeline
    call must then start with ``refresh_step_cache``."""
    cache_dit = _cache_dit()
    preset = preset_of(spec)
    blocks = sum(len(getattr(transformer, name, ())) for name in ("transformer_blocks", "single_transformer_blocks"))
    if preset.fn + preset.bn > blocks:
        raise InputError(f"{parse_cache(spec)} computes {preset.fn} first and {preset.bn} last blocks on every step, "
                         f"but this transformer has {blocks} blocks; choose a preset that computes fewer "
                         "(taylorseer and static-* compute 1)")
    try:
        cache_dit.enable_cache(transformer, **cache_configs(spec, None))
    except ValueError as exc:  # a transformer cache-dit has no block adapter for
        raise InputError(f"cache-dit cannot cache {type(transformer).__name__}: {exc}") from exc
    return f"step_cache={describe(spec)}"


def refresh_step_cache(transformer: Any, spec: str, steps: int) -> None:
    """Start a fresh cache context for a pipeline call of ``steps`` steps: cache-dit counts steps across calls
    otherwise, and a fixed schedule must be laid out for the call's number of steps."""
    _cache_dit().refresh_context(transformer, **cache_configs(spec, steps), verbose=False)


def cached_steps(transformer: Any) -> list[int]:
    """The steps of the last pipeline call that reused the cache (cache-dit's summary), for benchmarks and tests."""
    stats = _cache_dit().summary(transformer, logging=False)
    return sorted({step for stat in stats for step in stat.cached_steps})


def disable_step_cache(transformer: Any) -> None:
    """Restore ``transformer``'s own forward and blocks."""
    _cache_dit().disable_cache(transformer)
