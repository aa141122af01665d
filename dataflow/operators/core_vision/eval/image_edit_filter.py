"""``ImageEditFilter``: keep the edited images whose scores pass every threshold; the rest go to a sibling file."""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional

from dataflow.core.errors import InputError
from dataflow.core.operator import OperatorABC
from dataflow.io.atomic import atomic_open
from dataflow.logger import get_logger
from dataflow.utils.storage import FileStorage, dumps_row, write_records

logger = get_logger()

NO_CHANGE = "no_change"
NO_EDIT = "no edited image"
NOT_SCORED = "not scored"
BOUNDS = {">=": "min", "<=": "max"}
_FAILED_OP = {">=": "<", "<=": ">"}
# A reason with its value ("change.ssim 0.97 > max 0.95"), read back as its rule ("change.ssim > max 0.95").
_REASON = re.compile(r"(?P<name>\S+) (?P<value>\S+) (?P<rule>[<>] (?:min|max) \S+)")


@dataclass
class FilterSummary:
    """What a filter step kept and rejected, and which rule rejected how many edited images."""

    kept_rows: int = 0
    kept_images: int = 0
    rejected_rows: int = 0
    rejected_images: int = 0
    by_rule: Counter = field(default_factory=Counter)
    output_path: Optional[str] = None
    rejected_path: Optional[str] = None

    def describe(self) -> str:
        rules = ", ".join(f"{rule}: {n}" for rule, n in self.by_rule.most_common()) or "none"
        return (f"kept {self.kept_images} edited images in {self.kept_rows} rows; rejected {self.rejected_images} "
                f"in {self.rejected_rows} rows (by rule: {rules})")


def rejected_path_for(step_file: str) -> str:
    """The sibling file of rejected rows: ``..._rejected.{ext}`` beside the step file."""
    stem, ext = os.path.splitext(step_file)
    return f"{stem}_rejected{ext}"


def score_value(entry: Mapping, name: str) -> tuple[bool, Any]:
    """(found, value) of ``name`` in one edited image's scores: a dotted path (``judge.overall``), else the one
    leaf of that name (``clip_t`` is ``clip.clip_t``; ``dino`` is ``dino.dino``)."""
    node: Any = entry
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            break
        node = node[part]
    else:
        if not isinstance(node, Mapping):
            return True, node
    leaves = [value for path, value in _leaves(entry) if path[-1] == name]
    if len(leaves) == 1:
        return True, leaves[0]
    if len(leaves) > 1:
        paths = [".".join(path) for path, _ in _leaves(entry) if path[-1] == name]
        raise InputError(f"score name {name!r} is ambiguous ({', '.join(paths)}); use the dotted name")
    return False, None


def rule_of(reason: str) -> str:
    """The rule a ``rejected_because`` reason failed, without the image's value, for counting images by rule:
    ``"change.ssim 0.97 > max 0.95"`` -> ``"change.ssim > max 0.95"``; other reasons are their own rule."""
    match = _REASON.fullmatch(reason)
    return f"{match['name']} {match['rule']}" if match else reason


def _leaves(entry: Mapping, prefix: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    for key, value in entry.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, prefix + (key,))
        else:
            yield prefix + (key,), value


class ImageEditFilter(OperatorABC):
    """Keep edited images by their scores, as edit datasets do before training (X2Edit, UltraEdit, OmniEdit).

    Kept rows (with only their passing images, and those images' scores) become the next step; every rejected
    image goes, with its row's fields, to ``..._rejected`` beside the step file, with ``rejected_because`` stating
    each condition that failed, with the image's value (``change.ssim 0.97 > max 0.95``, ``clip_t missing (min
    0.2)``, ``no_change``). Rows without edited images or scores are rejected too (``no edited image``,
    ``not scored``).

    Args:
        min: score name -> lowest value kept (``{"clip_t": 0.2, "judge.overall": 6}``).
        max: score name -> highest value kept (``{"dino": 0.95, "change.ssim": 0.98}``).
        drop_no_change: reject images whose ``change.no_change`` is true.
    """

    def __init__(self, min: Optional[dict] = None, max: Optional[dict] = None,  # noqa: A002 - documented names
                 drop_no_change: bool = False):
        self.rules = [(name, ">=", _threshold(name, value)) for name, value in (min or {}).items()]
        self.rules += [(name, "<=", _threshold(name, value)) for name, value in (max or {}).items()]
        self.drop_no_change = drop_no_change
        if not self.rules and not drop_no_change:
            raise InputError("give at least one threshold (min=, max=) or drop_no_change=True")

    @staticmethod
    def get_desc(lang: str = "en") -> str:
        return "Keep the edited images whose scores pass every threshold; write the rejected ones beside them."

    def run(self, storage: FileStorage, input_score_key: str = "scores",
            input_edited_key: str = "output_image") -> FilterSummary:
        """Filter the current step's rows; write the kept rows as the next step and the rejected ones beside it."""
        self.check_names(storage, input_score_key)
        summary = FilterSummary(output_path=storage.write_path, rejected_path=rejected_path_for(storage.write_path))
        split = (self.split(row, input_score_key, input_edited_key, summary) for row in storage.stream())
        if storage.cache_type == "jsonl":  # both files stream
            with atomic_open(summary.rejected_path) as rejected:
                storage.write(kept for kept in self._routed(split, rejected.write) if kept is not None)
        else:
            pairs = list(split)
            storage.write([kept for kept, _ in pairs if kept is not None])
            write_records(summary.rejected_path, [r for _, r in pairs if r is not None], storage.cache_type)
        logger.info("%s", summary.describe())
        return summary

    @staticmethod
    def _routed(split, write_rejected) -> Iterator[Optional[dict]]:
        for kept, rejected in split:
            if rejected is not None:
                write_rejected(dumps_row(rejected) + "\n")
            yield kept

    def check_names(self, storage: FileStorage, score_key: str) -> None:
        """``InputError`` before anything is written when a threshold's name is in no row's scores."""
        names = {name for name, _, _ in self.rules} | ({f"change.{NO_CHANGE}"} if self.drop_no_change else set())
        missing, seen_any = set(names), False
        for row in storage.stream():
            for entry in row.get(score_key) or []:
                if isinstance(entry, Mapping):
                    seen_any = True
                    missing = {name for name in missing if not score_value(entry, name)[0]}
            if not missing:
                return
        if not seen_any:
            raise InputError(f"no row of {storage.read_path} has '{score_key}'; score the edits first "
                             "(ImageEditEvaluator, or dataflow-edit score)")
        raise InputError(f"no row of {storage.read_path} has the score(s) {', '.join(sorted(missing))}")

    def split(self, row: dict, score_key: str, edited_key: str, summary: FilterSummary
              ) -> tuple[Optional[dict], Optional[dict]]:
        """(the row with its passing images, or None; the row with its rejected images, or None)."""
        edited = list(row.get(edited_key) or [])
        scores = row.get(score_key)
        if not edited or not isinstance(scores, list) or len(scores) != len(edited):
            reason = NO_EDIT if not edited else NOT_SCORED
            summary.rejected_rows += 1
            summary.by_rule[reason] += 1
            return None, dict(row, rejected_because=[reason])
        kept, rejected, because = [], [], []
        for path, entry in zip(edited, scores):
            failed = self.failed_rules(entry)
            (rejected if failed else kept).append((path, entry))
            because += [reason for reason in failed if reason not in because]
            summary.by_rule.update(rule_of(reason) for reason in failed)
        summary.kept_images += len(kept)
        summary.rejected_images += len(rejected)
        summary.kept_rows += bool(kept)
        summary.rejected_rows += bool(rejected)
        return (_with_images(row, kept, edited_key, score_key) if kept else None,
                dict(_with_images(row, rejected, edited_key, score_key), rejected_because=because)
                if rejected else None)

    def failed_rules(self, entry: Any) -> list[str]:
        """Why one edited image is rejected, each failed condition with the image's value, e.g.
        ``["clip_t 0.12 < min 0.2", "no_change"]``; empty when it passes."""
        if not isinstance(entry, Mapping):
            return [NOT_SCORED]
        failed = []
        for name, op, threshold in self.rules:
            found, value = score_value(entry, name)
            number = _number(value) if found else None
            bound = f"{BOUNDS[op]} {threshold:g}"
            if not found:
                failed.append(f"{name} missing ({bound})")
            elif number is None:
                failed.append(f"{name} {value!r} is not a number ({bound})")
            elif not (number >= threshold if op == ">=" else number <= threshold):
                failed.append(f"{name} {_shown(number, threshold)} {_FAILED_OP[op]} {bound}")
        if self.drop_no_change and score_value(entry, f"change.{NO_CHANGE}")[1] is True:
            failed.append(NO_CHANGE)
        return failed


def _with_images(row: dict, pairs: list, edited_key: str, score_key: str) -> dict:
    return dict(row, **{edited_key: [p for p, _ in pairs], score_key: [s for _, s in pairs]})


def _shown(value: float, threshold: float) -> str:
    """``value`` in as few significant digits (3 at least) as keep it on its side of ``threshold``: 0.9712
    against 0.95 is "0.971", 0.95004 against 0.95 is "0.95004"."""
    for digits in range(3, 18):
        text = f"{value:.{digits}g}"
        if (float(text) < threshold) == (value < threshold) and float(text) != threshold:
            return text
    return repr(value)


def _threshold(name: Any, value: Any) -> float:
    if not isinstance(name, str) or not name:
        raise InputError(f"a threshold needs a score name, got {name!r}")
    number = _number(value)
    if number is None:
        raise InputError(f"threshold of {name!r} must be a number, got {value!r}")
    return number


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)
