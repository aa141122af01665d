"""``PromptedImageEditInstructionGenerator``: write edit instructions for source images, so that a dataset can
start from pictures alone.

One job of the driver does the work (resume, checkpoint, progress, per-row errors, concurrency): each image is a
row, the writer's checked drafts are its values, and the rows are expanded into one written row per instruction
when the step file is written. See ``instructions/`` for the taxonomy, the plan, the prompts and the writers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

from dataflow.core.errors import InputError
from dataflow.core.operator import OperatorABC
from dataflow.core.validation import check_positive_int
from dataflow.engines.job import EditJob
from dataflow.engines.local import LocalEngine
from dataflow.io.atomic import atomic_open, ensure_writable_folder
from dataflow.io.image_io import ImageIO
from dataflow.io.lock import output_locks
from dataflow.logger import get_logger
from dataflow.operators.core_vision.generate.instructions.plan import assign_types, type_counts
from dataflow.operators.core_vision.generate.instructions.quality import QualityRules
from dataflow.operators.core_vision.generate.instructions.rows import (
    DRAFTS_KEY,
    PLAN_KEY,
    Expander,
    JobRows,
    identities,
)
from dataflow.operators.core_vision.generate.instructions.serving import InstructionServing
from dataflow.operators.core_vision.generate.instructions.sources import ImageFolderRows, is_image_folder
from dataflow.operators.core_vision.generate.instructions.taxonomy import Taxonomy, load_taxonomy
from dataflow.operators.core_vision.generate.instructions.writer import InstructionWriter
from dataflow.utils.checkpoint import progress_path
from dataflow.utils.storage import FileStorage, dumps_row

logger = get_logger()


@dataclass
class InstructionSummary:
    """What a run of the generator did.

    ``images`` were planned (``asked`` of them in this run, ``reused`` from an earlier run's progress file,
    ``failed`` with an error); ``planned`` and ``written`` count instructions per edit type; ``declined`` per type
    the model found unfit for an image; ``duplicates`` were near-repeats within an image. ``unplanned`` images got no
    type (the quotas ask for fewer instructions than the images could take).
    """

    images: int
    asked: int
    reused: int
    failed: int
    planned: dict
    written: dict
    declined: dict
    duplicates: int
    unplanned: int
    seconds: float
    output_path: Optional[str] = None
    rejected_path: Optional[str] = None
    usage: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 when every image is done (declines included), 1 when some images failed."""
        return 0 if self.failed == 0 else 1

    def describe(self) -> str:
        total = sum(self.written.values())
        if self.planned:
            per_type = ", ".join(f"{name} {self.written.get(name, 0)}/{count}" for name, count in self.planned.items())
        else:
            per_type = "rewritten"
        text = (f"{self.images} images: {total} instructions written ({per_type}), "
                f"{sum(self.declined.values())} declined, {self.duplicates} near-duplicates dropped, "
                f"{self.failed} images failed; {self.asked} asked now, {self.reused} done earlier, "
                f"{self.seconds:.1f} s")
        if self.unplanned:
            text += f"; {self.unplanned} images got no type under the quotas"
        return text


class PromptedImageEditInstructionGenerator(OperatorABC):
    """Write edit instructions for each source image (or rewrite the users' instructions) as ``run``-ready rows.

    Each written row holds ``images`` (see ``run``'s ``paths_relative_to``), ``conversations`` (the instruction
    as a user message), ``edit_type``, a stable ``id`` (image identity / type / index, so a later ``run`` resumes
    by it), ``image_id`` and ``provenance`` (backend, model, prompt version), plus the input row's other fields.
    Declined types, near-duplicates and failed images go to ``{step file}_rejected.jsonl`` beside the step file.

    Args:
        instruction_writer: ``TemplateWriter()`` (offline, classic-grammar phrases), ``APIWriter(api_url, model,
            api_key)`` or ``LocalWriter(model)``, from ``dataflow.operators.core_vision.generate.instructions``.
        types: edit type names to write (default: every type of the taxonomy the writer can write).
        per_image: instructions per image (each of another type).
        quotas: instructions per type over the whole run (``{"style": 10}``); the other types share the rest.
        rewrite: rewrite each row's instruction instead of writing new ones (keeping the original beside it).
        taxonomy: a taxonomy file (default the shipped ``edit_types.json``) or a ``Taxonomy``.
        rules: the quality rules (lengths, the near-duplicate ratio).
        seed: changes which images get which types; the same seed plans the same.
        save_interval: finished images per durable checkpoint.
        engine: ``LocalEngine()`` (default) or ``MultiProcessEngine(devices)`` for a local model on several GPUs.
    """

    def __init__(self, instruction_writer: InstructionWriter, types: Optional[Sequence[str]] = None,
                 per_image: int = 1, quotas: Optional[Mapping[str, int]] = None, rewrite: bool = False,
                 taxonomy: Union[str, Taxonomy, None] = None, rules: Optional[QualityRules] = None, seed: int = 0,
                 save_interval: int = 10, engine: Any = None):
        if not isinstance(instruction_writer, InstructionWriter):
            raise InputError("instruction_writer must be an InstructionWriter, got "
                             f"{type(instruction_writer).__name__}")
        check_positive_int(per_image=per_image, save_interval=save_interval)
        if rewrite and (types or quotas or per_image != 1):
            raise InputError("types, quotas and per_image choose new instructions (--types, --quota, --per-image); "
                             "rewriting keeps one instruction per row, the row's own")
        if rewrite and not instruction_writer.can_rewrite:
            raise InputError(f"the {instruction_writer.backend} backend cannot rewrite instructions; use --backend api "
                             "or --backend local")
        self.taxonomy = taxonomy if isinstance(taxonomy, Taxonomy) else load_taxonomy(taxonomy)
        self.writer = instruction_writer
        self.types = self._types(types)
        self.per_image = per_image
        self.quotas = {self.taxonomy.get(name).name: count for name, count in (quotas or {}).items()}
        self.rewrite = rewrite
        self.seed = seed
        self.save_interval = save_interval
        self.serving = InstructionServing(instruction_writer, self.taxonomy, rewrite, rules or QualityRules())
        if type(engine).__name__ == "RayEngine":  # its records travel as Arrow tables of output paths
            raise InputError("writing instructions runs on the local engine or a MultiProcessEngine, not on Ray yet")
        self.engine = engine or LocalEngine()

    def _types(self, names: Optional[Sequence[str]]) -> list:
        chosen = self.taxonomy.select(names) if names else [t for t in self.taxonomy.types if self.writer.supports(t)]
        unsupported = [t.name for t in chosen if not self.writer.supports(t)]
        if unsupported:
            can = ", ".join(t.name for t in self.taxonomy.types if self.writer.supports(t))
            raise InputError(f"the {self.writer.backend} backend cannot write {', '.join(unsupported)} instructions "
                             f"(it writes {can or 'none'}); use --backend api or --backend local for them")
        if not chosen:
            raise InputError(f"the {self.writer.backend} backend can write none of the taxonomy's types")
        return chosen

    @staticmethod
    def get_desc(lang: str = "en") -> str:
        return "Write edit instructions of chosen types, with quotas, for each source image."

    def run(self, storage: FileStorage, input_image_key: str = "images", input_conversation_key: str = "conversations",
            output_key: str = "conversations", output_type_key: str = "edit_type",
            paths_relative_to: Optional[str] = None, show_progress: Optional[bool] = None) -> InstructionSummary:
        """Write the instructions for the current step's images as the next step file; return a summary.

        The current step may also be a folder of images (as the first step's input). Images whose answer cannot be
        used fail alone (in the rejected file, with the reason); a rerun asks again for them only. Relative image
        paths are written relative to ``paths_relative_to``: by default the storage's input folder, against which
        the next step of the same storage reads them; the CLI gives the output folder, whose file is a new input.
        """
        if not output_key or not output_type_key:
            raise InputError("output_key and output_type_key must be non-empty field names")
        source, base_dir = self.source(storage, input_image_key)
        out_dir = os.path.dirname(os.path.abspath(storage.write_path))
        ensure_writable_folder(out_dir, "output folder")
        relative_to = os.path.abspath(paths_relative_to) if paths_relative_to else base_dir
        planned, job_rows, unplanned = self.plan(source, input_image_key, input_conversation_key)
        job = EditJob(
            rows=job_rows, serving=self.serving, image_io=ImageIO(save_path=out_dir), base_dir=base_dir,
            progress_file=progress_path(storage.write_path), image_key=input_image_key,
            conversation_key=input_conversation_key if self.rewrite else PLAN_KEY, output_key=DRAFTS_KEY,
            save_interval=self.save_interval,
            # a value job: the driver hands the serving each row's images as "edited" too; here they are the
            # source images again (read twice), which the serving ignores
            edited_key=input_image_key, edited_dir=base_dir,
        )
        rejected_path = os.path.splitext(storage.write_path)[0] + "_rejected.jsonl"
        with output_locks(job.output_folders()):  # the answers and the step files: one span, no gap for a 2nd run
            rows, done = self.engine.run(job, show_progress=show_progress)
            expander = Expander(input_image_key, input_conversation_key, output_key, output_type_key, base_dir,
                                relative_to, self.provenance())
            with atomic_open(rejected_path) as rejected:
                output_path = storage.write(expander.expand(rows,
                                                            lambda row: rejected.write(dumps_row(row) + "\n")))
        tally = expander.tally
        summary = InstructionSummary(
            images=done.total, asked=done.total - done.reused, reused=done.reused,
            failed=tally.failed, planned=planned, written=tally.written, declined=tally.declined,
            duplicates=tally.duplicates, unplanned=unplanned, seconds=done.seconds, output_path=output_path,
            rejected_path=rejected_path, usage=done.usage)
        logger.info("%s", summary.describe())
        return summary

    def provenance(self) -> dict:
        """What each written row records: the writer's backend, model and prompt version, and the taxonomy's."""
        return {**self.writer.provenance(), **({} if self.rewrite else {"taxonomy": self.taxonomy.version})}

    def source(self, storage: FileStorage, image_key: str) -> tuple:
        """The input rows (re-iterable) and the folder their relative image paths are meant against."""
        first = storage.first_entry_file_name
        if storage.operator_step == 0 and is_image_folder(first):
            if self.rewrite:
                raise InputError(f"{first} is a folder of images; rewriting needs rows that hold instructions (a "
                                 "JSONL with images and conversations)")
            rows = ImageFolderRows(first, image_key)
            rows.files()  # an empty folder is said now
            return rows, os.path.abspath(first)
        return storage.stream(), storage.input_dir

    def plan(self, source: Any, image_key: str, conversation_key: str) -> tuple:
        """(instructions planned per type, the job's rows, images that got no type)."""
        if self.rewrite:
            return {}, JobRows(source, image_key, conversation_key), 0
        ids = identities(source, image_key, PLAN_KEY)
        if not ids:
            raise InputError("the input holds no rows")
        names = [t.name for t in self.types]
        counts = type_counts(len(ids), names, self.per_image, self.quotas)
        plans = assign_types(ids, counts, self.seed)
        return counts, JobRows(source, image_key, PLAN_KEY, plans), sum(1 for p in plans if not p)
