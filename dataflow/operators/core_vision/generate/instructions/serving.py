"""``InstructionServing``: an instruction writer behind the serving protocol, so that writing instructions runs on
the engines' driver (resume, checkpoint, progress, per-row errors, concurrency) like generation and scoring.

The driver's value jobs (``EditJob.edited_key``) hand each row's images to the serving and store what it returns
as the row's values. Here a row is one image; its "instruction" field is the plan (the edit types wanted, comma
separated) or, when rewriting, the user's instruction; its values are the image's checked drafts, which the
operator later expands into one written row per instruction.
"""

from __future__ import annotations

from typing import Optional, Sequence

from dataflow.core.request import EditRequest, EditResult
from dataflow.core.serving import ImageEditServing
from dataflow.operators.core_vision.generate.instructions.quality import QualityRules, clean
from dataflow.operators.core_vision.generate.instructions.taxonomy import Taxonomy
from dataflow.operators.core_vision.generate.instructions.writer import Drafts, InstructionAsk, InstructionWriter

PLAN_SEPARATOR = ","


def plan_text(types: Sequence[str]) -> str:
    """The plan as the row's text field: type names, comma separated."""
    return PLAN_SEPARATOR.join(types)


class InstructionServing(ImageEditServing):
    """Write (or rewrite) the instructions of a batch of images with ``writer``, then apply the quality rules.

    Each row's values are a list of entries: ``{"type", "instruction"}`` to write, ``{"type", "declined"}`` (the
    model found the type does not fit the image), ``{"type", "instruction", "duplicate_of"}`` (a near-duplicate of
    an earlier entry of the image, not written); when rewriting, ``{"instruction", "original"}``. An image whose
    answer misses a type or breaks a rule fails as a whole, with every reason: a rerun asks again.

    Args:
        writer: the ``InstructionWriter``.
        taxonomy: the edit types plans name.
        rewrite: rows hold user instructions to rewrite, not plans.
        rules: the quality rules (default ``QualityRules()``).
    """

    max_input_images = None  # the first image of a row is the one written for

    def __init__(self, writer: InstructionWriter, taxonomy: Taxonomy, rewrite: bool = False,
                 rules: Optional[QualityRules] = None):
        self.writer = writer
        self.taxonomy = taxonomy
        self.rewrite = rewrite
        self.rules = rules or QualityRules()
        self.batch_size = writer.batch_size
        self.concurrency = writer.concurrency

    @property
    def display_name(self) -> str:
        return f"the {self.writer.backend} instruction writer"

    def fingerprint(self) -> dict:
        return {"serving": "instructions", "rewrite": self.rewrite, "writer": self.writer.fingerprint(),
                "taxonomy": self.taxonomy.version, "rules": [self.rules.max_chars, self.rules.max_words,
                                                             self.rules.similarity]}

    def check_model(self):
        return self.writer.check()

    def usage(self) -> dict:
        return self.writer.usage()

    def use_device(self, device: str) -> None:
        self.writer.use_device(device)

    def close(self) -> None:
        self.writer.close()

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        asks = [self.ask(request) for request in requests]
        drafts = self.writer.write(asks)
        if len(drafts) != len(asks):
            raise RuntimeError(f"{type(self.writer).__name__}.write returned {len(drafts)} answers for "
                               f"{len(asks)} images")
        return [self.result(ask, draft) for ask, draft in zip(asks, drafts)]

    def ask(self, request: EditRequest) -> InstructionAsk:
        if self.rewrite:
            return InstructionAsk(request.key, request.image, instruction=request.instruction)
        types = tuple(self.taxonomy.get(name) for name in request.instruction.split(PLAN_SEPARATOR))
        return InstructionAsk(request.key, request.image, types=types)

    def result(self, ask: InstructionAsk, drafts: Drafts) -> EditResult:
        """The image's checked entries, or its error naming each problem."""
        if drafts.error:
            return EditResult(error=drafts.error)
        problems, entries, kept = [], [], []
        for item in drafts.items:
            label = f"type {item['type']!r}: " if "type" in item else ""
            if "declined" in item:
                entries.append(item)
                continue
            text = clean(item["instruction"])
            problem = self.rules.problem(text)
            if problem:
                problems.append(label + problem)
                continue
            entry = {**item, "instruction": text}
            earlier = self.rules.duplicate_of(text, [e["instruction"] for e in kept])
            if earlier is not None:
                entry["duplicate_of"] = kept[earlier].get("type", kept[earlier]["instruction"])
            else:
                kept.append(entry)
            if ask.instruction is not None:
                entry["original"] = ask.instruction
            entries.append(entry)
        if problems:
            return EditResult(error="; ".join(problems))
        return EditResult(values=entries)
