"""The dataset card (``README.md``): YAML the Hub reads (``license``, ``configs``, ``dataset_info``), then counts, the
model, its licence and the generation parameters, the scoring and the filters the rows passed.

The licence is the editing model's, as its card declared it and the run recorded it (``run.json``'s ``model``;
rows' ``output_image_license`` for a run without one): several models' licences are all named, and a run that
recorded none says ``unknown``.

The parameters come from the progress files beside the exported file (their first line is
``{"fingerprint": {...}}``, see ``dataflow.utils.checkpoint``): the generation one (``edited_step1.progress.jsonl``
for a run of the CLI) and the scoring one (``serving: "scores"``). The filters come from the ``_rejected`` sibling
of a filtered file: how many rows had images each rule rejected (``clip_t < min 0.2: 12``).
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

from dataflow.io.atomic import atomic_open
from dataflow.operators.core_vision.eval.image_edit_filter import rejected_path_for, rule_of
from dataflow.operators.core_vision.eval.image_edit_selector import selection_path_for
from dataflow.utils.checkpoint import progress_path
from dataflow.utils.manifest import read_manifest
from dataflow.utils.storage import RowStream

CARD_NAME = "README.md"
GENERATION_PROGRESS = "edited_step1.progress.jsonl"


@dataclass
class RunInfo:
    """What the card says about where the examples came from."""

    source_file: str
    backend: Optional[str] = None
    model: Optional[dict] = None  # run.json's "model": id, revision, licence
    licenses: list = field(default_factory=list)  # the rows' licences (output_image_license), in order
    generation: Optional[dict] = None
    scoring: Optional[dict] = None
    filters: Counter = field(default_factory=Counter)  # rule -> rows with images it rejected
    filtered: bool = False
    selection: Optional[dict] = None  # the select step's report (best-of-N), when the file is its SFT output


def read_fingerprint(path: str) -> Optional[dict]:
    """The fingerprint in the first line of a progress file, or None."""
    try:
        with open(path, encoding="utf-8") as handle:
            header = json.loads(handle.readline())
    except (OSError, ValueError):
        return None
    fingerprint = header.get("fingerprint") if isinstance(header, dict) else None
    return fingerprint if isinstance(fingerprint, dict) else None


def read_selection(path: str) -> Optional[dict]:
    """A select step's report, or None."""
    try:
        with open(path, encoding="utf-8") as handle:
            report = json.load(handle)
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def run_info(output_file: str) -> RunInfo:
    """The run's backend, generation and scoring parameters, and the filter counts, as far as the folder tells."""
    folder = os.path.dirname(os.path.abspath(output_file))
    manifest = read_manifest(folder)
    model = manifest.get("model") if isinstance(manifest.get("model"), dict) else None
    info = RunInfo(source_file=os.path.basename(output_file), backend=manifest.get("backend"), model=model)
    own = progress_path(os.path.abspath(output_file))
    preferred = [own, os.path.join(folder, GENERATION_PROGRESS)]
    others = sorted(glob.glob(os.path.join(glob.escape(folder), "*.progress.jsonl")))
    for path in dict.fromkeys(preferred + others):
        fingerprint = read_fingerprint(path) if os.path.isfile(path) else None
        if fingerprint is None:
            continue
        if fingerprint.get("serving") == "scores":
            info.scoring = info.scoring or fingerprint
        else:
            info.generation = info.generation or fingerprint
    info.selection = read_selection(selection_path_for(os.path.abspath(output_file)))
    rejected = rejected_path_for(os.path.abspath(output_file))
    if os.path.isfile(rejected):
        info.filtered = True
        for row in RowStream(rejected, skip_malformed_lines=True):
            for rule in {rule_of(str(reason)) for reason in row.get("rejected_because") or []}:
                info.filters[rule] += 1
    return info


def card_license(info: RunInfo) -> list:
    """The front matter's licence lines: the model's licence (``other`` with its name), several models' as ``other``
    naming them all, ``unknown`` when nothing recorded one."""
    if info.model and not info.licenses:
        license_id, name = str(info.model.get("license") or "unknown"), info.model.get("license_name")
        return [f"license: {_scalar(license_id)}"] + ([f"license_name: {_scalar(name)}"]
                                                      if license_id == "other" and name else [])
    if len(info.licenses) == 1:
        return [f"license: {_scalar(info.licenses[0])}"]
    if info.licenses:
        return ["license: other", f"license_name: {_scalar(' AND '.join(info.licenses))}"]
    return ["license: unknown"]


def config_yaml(configs: list) -> list:
    """The card's ``configs`` and ``dataset_info`` YAML. One config is ``default``; a best-of-N export has one
    config per split (``sft``, ``preference``), since their columns differ and ``datasets`` casts a config's splits
    to one set of features."""
    if not configs:
        return []
    single = len(configs) == 1
    lines = ["configs:"]
    for n, config in enumerate(configs):
        split = config.get("split", "train")
        lines.append(f"- config_name: {'default' if single else split}")
        lines += ["  default: true"] if not single and n == 0 else []
        lines += ["  data_files:", f"  - split: {split}", f"    path: {json.dumps(config['data_files'])}"]
    lines.append("dataset_info:")
    indent = "  " if single else "    "
    for config in configs:
        split = config.get("split", "train")
        if not single:
            lines.append(f"  - config_name: {split}")
        block = []
        if config.get("features"):
            block.append("features:")
            for entry in config["features"]:
                name, (kind, dtype) = entry["name"], [(k, v) for k, v in entry.items() if k != "name"][0]
                block += [f"- name: {name}", f"  {kind}: {dtype}"]
        block += ["splits:", f"- name: {split}", f"  num_examples: {config.get('examples', 0)}"]
        lines += [indent + line for line in block]
    return lines


def selection_lines(selection: Optional[dict], generation: Optional[dict]) -> list:
    """How the candidates were generated and ranked, from the select step's report."""
    if not selection:
        return []
    count = (generation or {}).get("candidates")
    made = (f"Each row was edited {count} times" if count else "Each row's edited images are its candidates") + (
        ", each candidate with its own seed, derived from (seed, row key, candidate index) by `dataflow-edit run "
        "--candidates`.")
    thresholds = ", ".join(f"`{t}`" for t in selection.get("thresholds") or []) or "none"
    lines = ["## Candidates and ranking", "", made,
             f"Candidates were ranked by `{selection.get('best_by')}` (higher is better; equal scores go to the lower "
             "candidate index). The best candidate of a row is its SFT example when it passes the thresholds "
             f"({thresholds}); otherwise all the row's candidates are rejected (kept as negatives). Each worse "
             f"candidate forms a preference pair (chosen: the best) when the gap is at least "
             f"{selection.get('min_margin', 0):g} and above 0; the others are rejected.", "",
             "| candidates | SFT | preference pairs | rejected |", "|---|---|---|---|",
             f"| {selection.get('candidates')} | {selection.get('sft')} | {selection.get('preference')} | "
             f"{selection.get('rejected')} |", ""]
    return lines


def write_card(out: str, *, info: RunInfo, summary: Any, configs: list, fmt: str) -> str:
    """Write ``out/README.md``; return its path."""
    lines = ["---"] + config_yaml(configs)
    lines += card_license(info) + ["tags:", "- image-editing", "- dataflow-edit", "---", ""]
    lines += [f"# Image edits from `{info.source_file}`", "",
              f"Exported by `dataflow-edit export --format {fmt}`: one example per edited image.", "",
              "| | |", "|---|---|", f"| examples | {summary.written} |", f"| rows read | {summary.rows} |",
              f"| rejected examples (marked) | {summary.rejected_written} |",
              f"| failed rows left out | {summary.skipped_failed} |",
              f"| failed rows exported (no edited image) | {summary.failed_written} |",
              f"| examples not exported (missing image, bad row) | {summary.problems} |",
              f"| shards | {len(summary.shards)} |", ""]
    if getattr(summary, "preference_rows", 0):
        lines += [f"| preference pairs | {summary.preference_written} |", ""]
    if fmt in ("hf", "ip2p") and len(configs) > 1:
        lines += ["```python", "from datasets import load_dataset", "",
                  'sft = load_dataset("PATH/TO/THIS/FOLDER", "sft")["sft"]',
                  'preference = load_dataset("PATH/TO/THIS/FOLDER", "preference")["preference"]', "```", ""]
    elif fmt in ("hf", "ip2p"):
        lines += ["```python", "from datasets import load_dataset", "",
                  'dataset = load_dataset("parquet", data_dir="PATH/TO/THIS/FOLDER")["train"]', "```", ""]
    if info.backend or info.generation or info.model or info.licenses:
        lines += ["## Generation", ""]
        if info.backend:
            lines += [f"Backend: `{info.backend}`.", ""]
        if info.model:
            revision = f" at revision `{info.model['revision']}`" if info.model.get("revision") else ""
            lines += [f"Model: `{_text(info.model.get('model'))}`{revision}.", ""]
        licenses = info.licenses or ([_label(info.model)] if info.model else [])
        if licenses:
            lines += [f"Model licence (from its model card): {', '.join(f'`{_text(x)}`' for x in licenses)}. The "
                      "edited images were made with it; check what its terms allow before using this dataset.", ""]
        if info.generation:
            lines += ["| parameter | value |", "|---|---|"]
            lines += [f"| {key} | `{_text(value)}` |" for key, value in info.generation.items()]
            lines.append("")
    lines += selection_lines(info.selection, info.generation)
    if info.scoring:
        lines += ["## Scoring", "", "```json", json.dumps(info.scoring, indent=2, sort_keys=True), "```", ""]
    if info.filtered:
        lines += ["## Filters", "", "Rows the filter step rejected edited images of, by rule (from the `_rejected` "
                  "file; a row can fail several):", ""]
        lines += ["| rule | rejected |", "|---|---|"]
        lines += [f"| `{rule}` | {n} |" for rule, n in info.filters.most_common()] or ["| (none) | 0 |"]
        lines.append("")
    path = os.path.join(out, CARD_NAME)
    with atomic_open(path) as handle:
        handle.write("\n".join(lines))
    return path


def _scalar(value: Any) -> str:
    """A YAML scalar: plain for a licence id (``apache-2.0``), quoted otherwise."""
    text = str(value)
    return text if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.+-]*", text) else json.dumps(text)


def _label(model: dict) -> str:
    name = model.get("license_name")
    license_id = str(model.get("license") or "unknown")
    return name if license_id == "other" and name else license_id


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text.replace("|", "\\|").replace("`", "'")
