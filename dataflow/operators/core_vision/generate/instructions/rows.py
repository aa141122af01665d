"""The rows of an instruction job, and the rows it writes.

``JobRows`` is what the driver sees: one row per image, each with its identity (the row's ``id``, else a hash of
its image) and, when writing new instructions, its plan. The plan is part of the row's ``id`` there, so a rerun
with another plan for an image asks again for that image alone. ``expand`` turns each finished image into one
``run``-ready row per instruction (``images`` + ``conversations`` + ``edit_type`` + ``provenance``), and what was
declined, repeated or failed into rows of the rejected file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional, Sequence

from dataflow.core import rows as row_fields
from dataflow.core.errors import RowError
from dataflow.engines.tasks import RowKeys
from dataflow.operators.core_vision.generate.instructions.serving import plan_text

PLAN_KEY = "_instruct_plan"  # the job row's plan (its "instruction" for the driver)
IMAGE_ID_KEY = "_instruct_image_id"  # the job row's image identity
DRAFTS_KEY = "_instruct_drafts"  # the values the driver records per image
INTERNAL_KEYS = (PLAN_KEY, IMAGE_ID_KEY, DRAFTS_KEY, DRAFTS_KEY + "_error")
ERROR_KEY = "instruction_error"


def image_identity(key: str) -> str:
    """A short, stable image id from a driver row key: the row's own ``id`` as it is, else ``img-`` and 16 hex
    digits of the hash (``#n`` kept for the n-th repeat of one image)."""
    if key.startswith("id:"):
        return key[3:]
    base, sep, repeat = key.partition("#")
    return "img-" + base.split(":", 1)[-1][:16] + (sep + repeat)


def identities(source: Iterable[dict], image_key: str, text_key: str) -> list:
    """The image identity of every row of ``source``, in order (``text_key``'s value counts when present)."""
    keys = RowKeys(image_key, text_key)
    return [image_identity(keys.next(row)) for row in source]


class JobRows:
    """The driver's rows: ``source``'s rows with their image identity and, when ``plans`` is given, their plan
    (rows whose plan is empty are left out); read again from ``source`` on each pass.

    Args:
        source: the input rows (re-iterable).
        image_key: the field of the images.
        text_key: the field whose value joins the image in a row's identity (the conversation, when rewriting).
        plans: per source row, the tuple of its types; None when rewriting.
    """

    def __init__(self, source: Iterable[dict], image_key: str, text_key: str, plans: Optional[Sequence] = None):
        self.source = source
        self.image_key = image_key
        self.text_key = text_key
        self.plans = plans

    def count(self) -> int:
        """How many rows a pass yields (for the progress bar's total)."""
        if self.plans is not None:
            return sum(1 for plan in self.plans if plan)
        if isinstance(self.source, (list, tuple)):
            return len(self.source)
        count = getattr(self.source, "count", None)
        return count() if callable(count) else sum(1 for _ in self.source)

    def __iter__(self) -> Iterator[dict]:
        keys = RowKeys(self.image_key, self.text_key)
        for index, row in enumerate(self.source):
            image_id = image_identity(keys.next(row))
            if self.plans is None:
                yield {**row, IMAGE_ID_KEY: image_id}
            elif self.plans[index]:
                plan = plan_text(self.plans[index])
                yield {**row, IMAGE_ID_KEY: image_id, PLAN_KEY: plan, "id": f"{image_id} [{plan}]"}


@dataclass
class Tally:
    """What the expansion wrote."""

    written: dict = field(default_factory=dict)  # per type (or "rewrite")
    declined: dict = field(default_factory=dict)
    duplicates: int = 0
    failed: int = 0


class Expander:
    """One ``run``-ready row per written instruction; declined, duplicate and failed ones to ``rejected``.

    Args:
        image_key: the input rows' image field.
        conversation_key: the input rows' conversation field (replaced by the instruction).
        output_key, type_key: the written rows' instruction and edit type fields.
        base_dir: the folder the input's relative image paths are meant against.
        relative_to: the folder relative image paths are written relative to (absolute ones stay absolute).
        provenance: what each row records about how its instruction was made.
    """

    def __init__(self, image_key: str, conversation_key: str, output_key: str, type_key: str, base_dir: str,
                 relative_to: str, provenance: dict):
        self.image_key = image_key
        self.conversation_key = conversation_key
        self.output_key = output_key
        self.type_key = type_key
        self.base_dir = base_dir
        self.relative_to = relative_to
        self.provenance = provenance
        self.tally = Tally()

    def expand(self, rows: Iterable[dict], rejected: Any) -> Iterator[dict]:
        """The written rows of ``rows`` (the driver's output rows), in order; rejected ones as JSON lines to the
        ``rejected`` handle (through ``write_rejected``)."""
        for row in rows:
            base = self.base_row(row)
            error = row.get(DRAFTS_KEY + "_error")
            if error:
                self.tally.failed += 1
                rejected(dict(base, image_id=row[IMAGE_ID_KEY], **{ERROR_KEY: error}))
                continue
            for entry in row.get(DRAFTS_KEY) or []:
                written = self.entry_row(base, row[IMAGE_ID_KEY], entry)
                if "declined" in entry:
                    self.tally.declined[entry["type"]] = self.tally.declined.get(entry["type"], 0) + 1
                    rejected(written)
                elif "duplicate_of" in entry:
                    self.tally.duplicates += 1
                    rejected(written)
                else:
                    name = entry.get("type", "rewrite")
                    self.tally.written[name] = self.tally.written.get(name, 0) + 1
                    yield written

    def base_row(self, row: dict) -> dict:
        """The input row without the job's fields, its images under ``images``, relative to the output folder."""
        base = {k: v for k, v in row.items() if k not in INTERNAL_KEYS and k not in ("id", self.image_key)}
        if row.get("id") is not None and PLAN_KEY not in row:
            base["source_id"] = row["id"]
        base["images"] = self.rebased(row)
        return base

    def rebased(self, row: dict) -> Any:
        """The row's image value with each relative path made relative to ``relative_to`` (the value as it was,
        when it names no image)."""
        value = row.get(self.image_key)
        try:
            paths = row_fields.image_paths(row, self.image_key, self.base_dir)
        except RowError:
            return value
        values = value if isinstance(value, (list, tuple)) else [value]
        moved = [original if os.path.isabs(os.path.expanduser(original))
                 else os.path.relpath(path, self.relative_to).replace(os.sep, "/")
                 for original, path in zip(values, paths)]
        return moved if isinstance(value, (list, tuple)) else moved[0]

    def entry_row(self, base: dict, image_id: str, entry: dict) -> dict:
        """The row of one entry: its id, image, instruction and type first, then the input row's other fields."""
        name = entry.get("type")
        row = {"id": f"{image_id}/{name}/0" if name else f"{image_id}/rewrite", "image_id": image_id,
               "images": base["images"]}
        if "instruction" in entry:
            row[self.output_key] = [{"role": "user", "content": entry["instruction"]}]
        if name:
            row[self.type_key] = name
        if "original" in entry:
            row["original_instruction"] = entry["original"]
        for reason in ("declined", "duplicate_of"):
            if reason in entry:
                row[reason] = entry[reason]
        row["provenance"] = dict(self.provenance)
        return {**row, **{k: v for k, v in base.items() if k not in row}}
