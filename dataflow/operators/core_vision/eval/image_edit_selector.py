"""``ImageEditSelector``: best-of-N after scoring. Per row, the best candidate becomes the row's edit (SFT data),
(best, worse) candidates become preference pairs, and the rest are kept as negatives.

Every candidate (edited image) of the input ends in exactly one of three files:

- **SFT** (the step file): one row per row whose best candidate passes the thresholds, holding only that image.
  The best candidate is counted here, also when it is the chosen side of preference pairs.
- **preference** (``..._preference``): one row per (best, worse) pair whose score gap is at least ``min_margin``
  and above 0 (equal scores say nothing about which edit is better). A pair counts its worse candidate.
- **rejected** (``..._rejected``, the filter's layout): every other candidate, with ``rejected_because``: all
  candidates of a row whose best fails a threshold (the rules it failed), worse candidates within the margin of
  the best, candidates without the ranking score (``no NAME``), and rows without edited images or scores.

Ranking is by one number per candidate, higher is better, ties broken by candidate index (the lower first), so
it is deterministic given the scores. The counts, the parameters and the three paths go to ``..._selection.json``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Mapping, Optional

from dataflow.core.errors import InputError
from dataflow.core.operator import OperatorABC
from dataflow.io.atomic import atomic_open
from dataflow.logger import get_logger
from dataflow.operators.core_vision.eval.image_edit_filter import (
    NO_EDIT,
    NOT_SCORED,
    ImageEditFilter,
    _number,
    rejected_path_for,
    score_value,
)
from dataflow.utils.storage import FileStorage, dumps_row, write_records

logger = get_logger()

SELECTION_KEY = "selection"
OVERALL = "overall"  # the value a metric named alone ranks by (judge, editscore)


@dataclass
class SelectSummary:
    """Where every candidate went. ``sft + preference + rejected == candidates`` (see the module's docstring)."""

    best_by: str
    min_margin: float
    thresholds: list = field(default_factory=list)
    rows: int = 0
    candidates: int = 0
    sft: int = 0
    preference: int = 0
    rejected: int = 0
    by_reason: Counter = field(default_factory=Counter)  # reason -> candidates rejected for it
    rows_without_edits: int = 0  # rows whose generation failed: no candidate, written to the rejected file
    output_path: Optional[str] = None
    preference_path: Optional[str] = None
    rejected_path: Optional[str] = None
    report_path: Optional[str] = None

    def describe(self) -> str:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in self.by_reason.most_common()) or "none"
        return (f"{self.candidates} candidates in {self.rows} rows, ranked by {self.best_by}: {self.sft} SFT (best "
                f"of their row), {self.preference} preference pairs (the worse side counted), {self.rejected} "
                f"rejected (by reason: {reasons}); {self.rows_without_edits} rows without edited images")

    def as_dict(self) -> dict:
        record = asdict(self)
        record["by_reason"] = dict(self.by_reason.most_common())
        return record


def sibling_path(step_file: str, suffix: str, ext: Optional[str] = None) -> str:
    stem, own_ext = os.path.splitext(step_file)
    return f"{stem}_{suffix}{own_ext if ext is None else ext}"


def preference_path_for(step_file: str) -> str:
    """The file of preference pairs beside a select step's file: ``..._preference.{ext}``."""
    return sibling_path(step_file, "preference")


def selection_path_for(step_file: str) -> str:
    """The select step's report beside its file: ``..._selection.json``."""
    return sibling_path(step_file, "selection", ".json")


def ranking_value(entry: Any, name: str) -> Optional[float]:
    """The number ``name`` gives one candidate, or None: a score name as the filter reads it (``clip_t``,
    ``judge.overall``), or a metric's name alone, which means its ``overall`` (judge, editscore) or its one
    numeric value (dino)."""
    if not isinstance(entry, Mapping):
        return None
    metric = entry.get(name)
    if isinstance(metric, Mapping):
        if OVERALL in metric:
            return _number(metric[OVERALL])
        numbers = [v for v in metric.values() if _number(v) is not None]
        if len(numbers) != 1:
            raise InputError(f"metric {name!r} has several values ({', '.join(map(str, metric))}); rank by one of "
                             f"them, e.g. --best-by {name}.{next(iter(metric))}")
        return _number(numbers[0])
    found, value = score_value(entry, name)
    return _number(value) if found else None


class ImageEditSelector(OperatorABC):
    """Best-of-N selection over scored candidates (``PromptedImageEditGenerator(candidates=N)``, then
    ``ImageEditEvaluator``): SFT rows, preference pairs and rejected negatives, every candidate in exactly one.

    Args:
        best_by: the ranking number: a score name (``editscore.overall``, ``judge.overall``, ``clip_t``) or a
            metric's name (``judge``, ``editscore``: their ``overall``). Higher is better.
        min_margin: a (best, worse) pair needs a gap of at least this much (and above 0).
        min, max: thresholds the best candidate must pass to be SFT data, as ``ImageEditFilter`` takes them.
        drop_no_change: the best candidate must have changed the image (``change.no_change`` false).
    """

    def __init__(self, best_by: str, min_margin: float = 0.0, min: Optional[dict] = None,  # noqa: A002
                 max: Optional[dict] = None, drop_no_change: bool = False):  # noqa: A002
        if not isinstance(best_by, str) or not best_by.strip():
            raise InputError("best_by must name a score, e.g. editscore.overall or judge.overall")
        margin = _number(min_margin)
        if margin is None or margin < 0:
            raise InputError(f"min_margin must be a number at least 0, got {min_margin!r}")
        self.best_by = best_by.strip()
        self.min_margin = margin
        self.thresholds = (ImageEditFilter(min=min, max=max, drop_no_change=drop_no_change)
                           if (min or max or drop_no_change) else None)

    @staticmethod
    def get_desc(lang: str = "en") -> str:
        return "Keep each row's best-scored candidate; pair it with the worse ones; keep the rest as negatives."

    def run(self, storage: FileStorage, input_score_key: str = "scores",
            input_edited_key: str = "output_image") -> SelectSummary:
        """Select over the current step's rows; write the SFT rows as the next step, and the preference pairs,
        the rejected candidates and the report beside it."""
        self.check_names(storage, input_score_key)
        summary = SelectSummary(
            best_by=self.best_by, min_margin=self.min_margin,
            thresholds=[f"{n} {op} {t:g}" for n, op, t in self.thresholds.rules] if self.thresholds else [],
            output_path=storage.write_path, preference_path=preference_path_for(storage.write_path),
            rejected_path=rejected_path_for(storage.write_path), report_path=selection_path_for(storage.write_path))
        if self.thresholds and self.thresholds.drop_no_change:
            summary.thresholds.append("no_change")
        routed = (self.select(row, input_score_key, input_edited_key, summary) for row in storage.stream())
        if storage.cache_type == "jsonl":  # the three files stream
            with atomic_open(summary.preference_path) as pairs, atomic_open(summary.rejected_path) as rejected:
                storage.write(sft for sft in self._routed(routed, pairs.write, rejected.write) if sft is not None)
        else:
            selected = list(routed)
            storage.write([sft for sft, _, _ in selected if sft is not None])
            write_records(summary.preference_path, [p for _, ps, _ in selected for p in ps], storage.cache_type)
            write_records(summary.rejected_path, [r for _, _, r in selected if r is not None], storage.cache_type)
        assert summary.sft + summary.preference + summary.rejected == summary.candidates, summary
        with atomic_open(summary.report_path) as report:
            report.write(json.dumps(summary.as_dict(), indent=2) + "\n")
        logger.info("%s", summary.describe())
        return summary

    @staticmethod
    def _routed(routed, write_pair, write_rejected) -> Iterator[Optional[dict]]:
        for sft, pairs, rejected in routed:
            for pair in pairs:
                write_pair(dumps_row(pair) + "\n")
            if rejected is not None:
                write_rejected(dumps_row(rejected) + "\n")
            yield sft

    def check_names(self, storage: FileStorage, score_key: str) -> None:
        """``InputError`` before anything is written when no row has the ranking score (or a threshold's)."""
        if self.thresholds:
            self.thresholds.check_names(storage, score_key)
        for row in storage.stream():
            for entry in row.get(score_key) or []:
                if ranking_value(entry, self.best_by) is not None:
                    return
        raise InputError(f"no row of {storage.read_path} has the score {self.best_by!r} in '{score_key}'; score the "
                         "candidates first (dataflow-edit score --metrics ...) and name a score they have")

    def select(self, row: dict, score_key: str, edited_key: str, summary: SelectSummary
               ) -> tuple[Optional[dict], list, Optional[dict]]:
        """(the SFT row or None, the preference rows, the row of rejected candidates or None) of one row."""
        edited = list(row.get(edited_key) or [])
        scores = row.get(score_key)
        summary.rows += 1
        summary.candidates += len(edited)
        if not edited or not isinstance(scores, list) or len(scores) != len(edited):
            reason = NO_EDIT if not edited else NOT_SCORED
            summary.rejected += len(edited)
            if edited:
                summary.by_reason[reason] += len(edited)
            else:
                summary.rows_without_edits += 1
            return None, [], dict(row, rejected_because=[reason])
        values = [ranking_value(entry, self.best_by) for entry in scores]
        ranked = sorted((k for k, v in enumerate(values) if v is not None), key=lambda k: (-values[k], k))
        split: dict[int, str] = {}
        reasons: dict[int, str] = {k: f"no {self.best_by}" for k, v in enumerate(values) if v is None}
        if ranked:
            best = ranked[0]
            failed = self.thresholds.failed_rules(scores[best]) if self.thresholds else []
            if failed:
                reasons.update({k: "; ".join(failed) for k in ranked})
            else:
                split[best] = "sft"
                for k in ranked[1:]:
                    gap = values[best] - values[k]
                    if gap > 0 and gap >= self.min_margin:
                        split[k] = "preference"
                    else:
                        reasons[k] = f"{self.best_by} within {self.min_margin:g} of the best"
        split.update({k: "rejected" for k in reasons})
        selection = {"metric": self.best_by, "chosen": ranked[0] if "sft" in split.values() else None,
                     "ranked": [{"index": k, "value": values[k], "image": edited[k], "split": split[k]}
                                for k in ranked + [k for k, v in enumerate(values) if v is None]]}
        return (self._sft_row(row, split, edited, scores, selection, score_key, edited_key, summary),
                self._pairs(row, split, edited, scores, values, score_key, edited_key, summary),
                self._rejected_row(row, reasons, edited, scores, selection, score_key, edited_key, summary))

    @staticmethod
    def _sft_row(row, split, edited, scores, selection, score_key, edited_key, summary) -> Optional[dict]:
        best = selection["chosen"]
        if best is None:
            return None
        summary.sft += 1
        return dict(row, **{edited_key: [edited[best]], score_key: [scores[best]], SELECTION_KEY: selection})

    def _pairs(self, row, split, edited, scores, values, score_key, edited_key, summary) -> list:
        best = next((k for k, s in split.items() if s == "sft"), None)
        common = {k: v for k, v in row.items() if k not in (edited_key, score_key, f"{edited_key}_error")}
        pairs = []
        for k in sorted((k for k, s in split.items() if s == "preference"), key=lambda k: (-values[k], k)):
            pairs.append(dict(common, chosen_image=edited[best], rejected_image=edited[k], chosen_index=best,
                              rejected_index=k, chosen_score=values[best], rejected_score=values[k],
                              metric=self.best_by, chosen_scores=scores[best], rejected_scores=scores[k]))
        summary.preference += len(pairs)
        return pairs

    @staticmethod
    def _rejected_row(row, reasons, edited, scores, selection, score_key, edited_key, summary) -> Optional[dict]:
        if not reasons:
            return None
        ks = sorted(reasons)
        summary.rejected += len(ks)
        summary.by_reason.update(reasons[k] for k in ks)
        because = list(dict.fromkeys(part for k in ks for part in reasons[k].split("; ")))
        return dict(row, **{edited_key: [edited[k] for k in ks], score_key: [scores[k] for k in ks],
                            SELECTION_KEY: selection, "rejected_because": because})
