"""The preference split of a best-of-N export: one example per (chosen, rejected) pair of ``dataflow-edit select``.

A pair row (``selected_step1_preference.jsonl``) holds the row's fields plus ``chosen_image``, ``rejected_image``,
their candidate indices, ``chosen_score``, ``rejected_score`` and ``metric`` (the score they were ranked by). It
becomes, beside the SFT split:

- ``hf``: ``data/preference-*.parquet`` with ``id``, ``instruction``, ``source_image`` (``source_images`` when a
  row has several), ``chosen`` and ``rejected`` (``Image`` features), ``chosen_score``, ``rejected_score``,
  ``metric``, ``chosen_index``, ``rejected_index``: the (prompt, chosen, rejected) rows Diffusion-DPO style trainers
  read.
- ``webdataset``: ``preference-*.tar`` of ``{key}.source.png``, ``{key}.chosen.png``, ``{key}.rejected.png``,
  ``{key}.txt`` and ``{key}.json`` (the scores, indices, metric, file names and the row's other fields).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Union

from dataflow.core.errors import RowError
from dataflow.core.rows import instruction
from dataflow.exporters.base import ExportWriter, Layout
from dataflow.exporters.examples import PathResolver, Problem, _identity
from dataflow.exporters.images import EncodedImage, encode_file
from dataflow.exporters.parquet import Column, ParquetWriter, image_cell
from dataflow.exporters.webdataset import WebDatasetWriter
from dataflow.utils.storage import RowStream

SPLIT = "preference"
PAIR_KEYS = ("chosen_image", "rejected_image", "chosen_index", "rejected_index", "chosen_score", "rejected_score",
             "metric", "chosen_scores", "rejected_scores")


@dataclass
class PreferenceExample:
    """One (chosen, rejected) pair of edits of one source and instruction; ``key`` is ``{pair:08d}``."""

    key: str
    id: str
    instruction: str
    sources: list
    chosen: str
    rejected: str
    chosen_score: Optional[float]
    rejected_score: Optional[float]
    metric: Optional[str]
    chosen_index: Optional[int]
    rejected_index: Optional[int]
    record: dict = field(default_factory=dict)  # chosen_scores, rejected_scores and the row's other fields


@dataclass
class PairImages:
    """A pair's images as stored."""

    sources: list
    chosen: EncodedImage
    rejected: EncodedImage

    def stored(self) -> list:
        return self.sources + [self.chosen, self.rejected]


class PreferenceReader:
    """The pairs of a preference file, one row at a time (the run's field names, as ``RowReader`` takes them)."""

    def __init__(self, paths: PathResolver, image_key: str = "images", conversation_key: str = "conversations"):
        self.paths = paths
        self.image_key = image_key
        self.conversation_key = conversation_key

    def pairs(self, file: str) -> Iterator[Union[PreferenceExample, Problem]]:
        for index, (line, row) in enumerate(RowStream(file, skip_malformed_lines=True).numbered()):
            where = f"{os.path.basename(file)} line {line}" if line else f"{os.path.basename(file)} row {index + 1}"
            try:
                yield self.pair(index, row)
            except RowError as exc:
                yield Problem("bad row", where, str(exc))
            except FileNotFoundError as exc:
                yield Problem("missing image", where, str(exc))

    def pair(self, index: int, row: dict) -> PreferenceExample:
        missing = [k for k in ("chosen_image", "rejected_image") if not row.get(k)]
        if missing:
            raise RowError(f"a preference row needs {' and '.join(missing)} (a dataflow-edit select _preference "
                           "file)")
        own = {self.image_key, self.conversation_key, *PAIR_KEYS[:7]}
        return PreferenceExample(
            key=f"{index:08d}", id=_identity(row, self.image_key, self.conversation_key),
            instruction=instruction(row, self.conversation_key), sources=self.paths.sources(row, self.image_key),
            chosen=self.paths.edited(row["chosen_image"]), rejected=self.paths.edited(row["rejected_image"]),
            chosen_score=_float(row.get("chosen_score")), rejected_score=_float(row.get("rejected_score")),
            metric=row.get("metric"), chosen_index=row.get("chosen_index"), rejected_index=row.get("rejected_index"),
            record={k: v for k, v in row.items() if k not in own})

    def multi(self, file: str) -> bool:
        """Some pair's row has more than one source image."""
        return any(isinstance(row.get(self.image_key), (list, tuple)) and len(row[self.image_key]) > 1
                   for row in RowStream(file, skip_malformed_lines=True))


def pair_images(example: PreferenceExample, writer: ExportWriter, image_format: str) -> PairImages:
    """The pair's images as ``writer`` stores them; ``RowError`` naming a file that cannot be read."""
    return PairImages([encode_file(p, image_format, keep_bytes=writer.keep_source_bytes) for p in example.sources],
                      encode_file(example.chosen, image_format), encode_file(example.rejected, image_format))


class HFPreferenceWriter(ParquetWriter):
    """``data/preference-*.parquet``: the pairs as ``Image`` columns ``chosen`` and ``rejected``, with both scores."""

    name = "hf"
    keep_source_bytes = True

    def __init__(self, out: str, layout: Layout, shard_size: int = 1000, image_format: str = "png"):
        super().__init__(out, layout, shard_size, image_format, split=SPLIT)

    def columns(self) -> list:
        spec = [Column("id", "string", lambda e, i: e.id),
                Column("instruction", "string", lambda e, i: e.instruction),
                Column("source_image", "image", lambda e, i: image_cell(i.sources[0]))]
        if self.layout.multi:
            spec.append(Column("source_images", "image", lambda e, i: [image_cell(s) for s in i.sources], True))
        return spec + [Column("chosen", "image", lambda e, i: image_cell(i.chosen)),
                       Column("rejected", "image", lambda e, i: image_cell(i.rejected)),
                       Column("chosen_score", "float64", lambda e, i: e.chosen_score),
                       Column("rejected_score", "float64", lambda e, i: e.rejected_score),
                       Column("metric", "string", lambda e, i: e.metric),
                       Column("chosen_index", "int64", lambda e, i: e.chosen_index),
                       Column("rejected_index", "int64", lambda e, i: e.rejected_index)]


class WebDatasetPreferenceWriter(WebDatasetWriter):
    """``preference-*.tar``: ``source``, ``chosen`` and ``rejected`` members, the instruction and a json record."""

    def __init__(self, out: str, layout: Layout, shard_size: int = 1000, image_format: str = "png"):
        super().__init__(out, layout, shard_size, image_format, split=SPLIT)

    def write(self, example: PreferenceExample, images: PairImages) -> None:
        record = dict(example.record, id=example.id, chosen_score=example.chosen_score,
                      rejected_score=example.rejected_score, metric=example.metric,
                      chosen_index=example.chosen_index, rejected_index=example.rejected_index,
                      source_files=[os.path.basename(p) for p in example.sources],
                      chosen_file=os.path.basename(example.chosen), rejected_file=os.path.basename(example.rejected))
        self.write_members(example.key, images.sources, {"chosen": images.chosen, "rejected": images.rejected},
                           example.instruction, record)


PREFERENCE_WRITERS = {"hf": HFPreferenceWriter, "webdataset": WebDatasetPreferenceWriter}


def _float(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
