"""Markdown tables for docs/performance.md from ``bench_kontext.py`` and ``bench_families.py`` results
(``benchmarks/results/*.json``).

    python benchmarks/results_table.py benchmarks/results/*.json

Other results in that folder (the driver benchmark's ``driver-*.json``) have no such table and are skipped.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Optional


def cell(value, digits: int = 2) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


KONTEXT_FIELDS = ("device", "torch", "diffusers", "resolution", "steps", "batch_size", "baseline_s_per_image", "modes")


def is_kontext_result(result) -> bool:
    """Whether ``result`` (a loaded JSON) is a ``bench_kontext.py`` result, the only kind this script tables."""
    return isinstance(result, dict) and all(field in result for field in KONTEXT_FIELDS)


def table(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        result = json.load(handle)
    lines = [f"**{os.path.basename(path)}**: {result['device']}, torch {result['torch']}, diffusers "
             f"{result['diffusers']}, {result['resolution']}, {result['steps']} steps, batch {result['batch_size']}",
             "",
             "| mode | s/image | speedup | peak GiB | first call s | s/step | step rel. L2 vs baseline |",
             "|---|---|---|---|---|---|---|"]
    step = result.get("baseline_step", {})
    lines.append(f"| baseline (plain diffusers) | {cell(result['baseline_s_per_image'])} | 1.00 | "
                 f"{cell(result['baseline_peak_mem_gib'])} | | {cell(step.get('step_s'), 3)} | |")
    for name, mode in result["modes"].items():
        if "error" in mode or "skipped" in mode:
            reason = mode.get("error") or mode.get("skipped")
            lines.append(f"| {name} | not measured: {reason.splitlines()[0][:60]} | | | | | |")
            continue
        lines.append(f"| {name} | {cell(mode['s_per_image'])} | {cell(mode['speedup'])} | "
                     f"{cell(mode['peak_mem_gib'])} | {cell(mode['first_call_s'], 1)} | "
                     f"{cell(mode.get('step_s'), 3)} | {cell(mode.get('step_rel_l2_vs_baseline'), 3)} |")
    return "\n".join(lines)


def is_families_result(result) -> bool:
    """Whether ``result`` is a ``bench_families.py`` result (one table per family)."""
    return isinstance(result, dict) and result.get("benchmark") == "bench_families" and "families" in result


def family_tables(path: str) -> str:
    """One Markdown table per family of a ``bench_families.py`` result."""
    with open(path, encoding="utf-8") as handle:
        result = json.load(handle)
    parts = []
    for key, family in result["families"].items():
        lines = [f"**{os.path.basename(path)}, {family['title']}**: {result['device']}, torch {result['torch']}, "
                 f"diffusers {result['diffusers']}, {result['resolution']}; card: {family['card_steps']} steps "
                 f"{_guidance(family['card_guidance'])}, distilled: {family['distilled_steps']} steps "
                 f"{_guidance(family['distilled_guidance'])}",
                 "",
                 "| mode | s/image card | speedup | s/image distilled | speedup | peak GiB | first call s | s/step "
                 "| step rel. L2 vs baseline |",
                 "|---|---|---|---|---|---|---|---|---|"]
        base = family.get("baseline", {})
        if "error" in base:
            lines.append(f"| baseline (plain diffusers) | not measured: {base['error'].splitlines()[0][:60]} "
                         "| | | | | | | |")
        else:
            lines.append(f"| baseline (plain diffusers) | {cell(base['s_per_image_card'])} | 1.00 | "
                         f"{cell(base['s_per_image_distilled'])} | 1.00 | {cell(base['peak_mem_gib'])} | | "
                         f"{cell(base.get('step_s'), 3)} | |")
        for name, mode in family["modes"].items():
            if "error" in mode or "skipped" in mode:
                reason = mode.get("error") or mode.get("skipped")
                lines.append(f"| {name} | not measured: {reason.splitlines()[0][:60]} | | | | | | | |")
                continue
            lines.append(f"| {name} | {cell(mode['s_per_image_card'])} | {cell(mode['speedup_card'])} | "
                         f"{cell(mode['s_per_image_distilled'])} | {cell(mode['speedup_distilled'])} | "
                         f"{cell(mode['peak_mem_gib'])} | {cell(mode['first_call_s'], 1)} | "
                         f"{cell(mode.get('step_s'), 3)} | {cell(mode.get('step_rel_l2_vs_baseline'), 3)} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _guidance(guidance: dict) -> str:
    return ", ".join(f"{name} {value}" for name, value in guidance.items())


def main(argv: Optional[list] = None) -> None:
    paths = (argv if argv is not None else sys.argv[1:])
    if not paths:
        sys.exit("usage: python benchmarks/results_table.py RESULT.json [...]")
    tables = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            result = json.load(handle)
        if is_families_result(result):
            tables.append(family_tables(path))
        elif is_kontext_result(result):
            tables.append(table(path))
        else:
            print(f"skipped {path}: not a bench_kontext.py or bench_families.py result", file=sys.stderr)
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
