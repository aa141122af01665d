"""``export``: a run's output file (scored, filtered or not) as a training-ready dataset in one of four layouts.

The file is read twice, one row at a time: a first pass learns the columns (score names, whether any row has
several sources), the second writes each example as it is read. Nothing but the current row group or shard is held,
so memory stays flat however large the file.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

from dataflow.core.errors import InputError, RowError
from dataflow.core.validation import check_positive_int
from dataflow.exporters.ai_toolkit import AIToolkitWriter
from dataflow.exporters.base import ExampleImages, ExportWriter, Layout
from dataflow.exporters.card import run_info, write_card
from dataflow.exporters.examples import (
    EDIT_TYPE_KEY,
    SCORE_KEY,
    UNKNOWN_LICENSE,
    Example,
    PathResolver,
    Problem,
    RowReader,
    outputs_of,
)
from dataflow.exporters.images import IMAGE_FORMATS, encode_file
from dataflow.exporters.parquet import HFWriter, IP2PWriter
from dataflow.exporters.preference import PREFERENCE_WRITERS, PreferenceReader, pair_images
from dataflow.exporters.webdataset import WebDatasetWriter
from dataflow.io.atomic import ensure_writable_folder
from dataflow.logger import get_logger
from dataflow.utils.manifest import run_folders
from dataflow.utils.storage import RowStream

WRITERS: dict[str, type] = {"hf": HFWriter, "webdataset": WebDatasetWriter, "ip2p": IP2PWriter,
                            "ai-toolkit": AIToolkitWriter}
FORMATS = tuple(WRITERS)
logger = get_logger()


@dataclass
class ExportSummary:
    """What an export wrote and what it could not.

    ``problems`` counts examples (or whole rows) not exported because an image was missing or unreadable
    (``missing_images``) or the row's instruction or image field was unusable (``bad_rows``); any makes
    ``exit_code`` 1. Failed rows of the run are not problems of the export: they are left out
    (``skipped_failed``) or, with ``include_failed`` and ``hf``, exported without an edited image
    (``failed_written``).
    """

    format: str
    out: str
    rows: int = 0
    written: int = 0
    rejected_written: int = 0
    failed_written: int = 0
    skipped_failed: int = 0
    missing_images: int = 0
    bad_rows: int = 0
    shards: list = field(default_factory=list)
    preference_rows: int = 0
    preference_written: int = 0
    preference_shards: list = field(default_factory=list)
    configs: list = field(default_factory=list)  # the card's configs: data files, split, features, examples
    card: Optional[str] = None
    notes: list = field(default_factory=list)

    @property
    def problems(self) -> int:
        return self.missing_images + self.bad_rows

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0

    def describe(self) -> str:
        parts = [f"exported {self.written} examples ({self.format}) from {self.rows} rows"]
        if self.rejected_written:
            parts.append(f"{self.rejected_written} of them rejected by the filter")
        if self.failed_written:
            parts.append(f"{self.failed_written} failed rows without an edited image")
        unit = "folders" if self.format == "ai-toolkit" else "shards"
        parts += [f"{self.skipped_failed} failed rows left out", f"{self.missing_images} missing images",
                  f"{self.bad_rows} bad rows", f"{len(self.shards)} {unit}"]
        if self.preference_rows:
            parts.append(f"{self.preference_written} preference pairs from {self.preference_rows} rows in "
                         f"{len(self.preference_shards)} {unit}")
        return "; ".join(parts)


def export(path: str, format: str, out: str, *, shard_size: int = 1000,  # noqa: A002 - the CLI's name
           include_failed: bool = False, rejected: Optional[str] = None, image_format: str = "png",
           preference: Optional[str] = None, input_dir: Optional[str] = None, run_dir: Optional[str] = None,
           on_problem: Optional[Callable[[Problem], None]] = None, progress: bool = False) -> ExportSummary:
    """Export a run's output file as a dataset in ``out``; return what was written.

    Args:
        path: the output file (``edited_step1.jsonl``, or a scored or filtered one; jsonl, json, csv or parquet).
        format: "hf" (parquet + card for ``datasets``), "webdataset" (tar shards), "ip2p" (parquet with diffusers'
            InstructPix2Pix columns) or "ai-toolkit" (``targets/`` + ``control/`` folders).
        out: the export folder (created); a rerun replaces the files an earlier export of the format wrote there.
        shard_size: examples per parquet or tar shard.
        include_failed: export failed rows too, without an edited image and with their ``error`` (``hf`` only; the
            other formats need an edited image and leave them out, with a note).
        rejected: a filter step's ``..._rejected`` file: its examples are exported too, marked ``rejected`` with
            ``rejected_because`` (negatives for preference training). Not for ``ai-toolkit``.
        image_format: "png" or "jpeg": how images are stored (see ``dataflow.exporters.images``).
        preference: a select step's ``..._preference`` file: the exported file is then its SFT split (``sft``)
            and the pairs become a ``preference`` split beside it (``hf`` and ``webdataset`` only; see
            ``dataflow.exporters.preference``).
        input_dir, run_dir: override the folders of ``run.json`` beside ``path`` (source images; edited images).
        on_problem: called with each example that cannot be exported (default: a warning in the log).
        progress: show a progress bar on stderr.
    """
    writer_class = _check_options(path, format, out, shard_size, include_failed, rejected, image_format, preference)
    folders = run_folders(path)
    keys = folders.keys
    paths = PathResolver(path, input_dir or folders.input_dir, run_dir or folders.run_dir)
    readers = [(path, RowReader(paths, keys.get("image_key", "images"), keys.get("conversation_key", "conversations"),
                                keys.get("output_key", "output_image")))]
    if rejected:
        readers.append((rejected, RowReader(paths, readers[0][1].image_key, readers[0][1].conversation_key,
                                            readers[0][1].output_key, rejected=True)))
    summary = ExportSummary(format=format, out=out)
    if include_failed and writer_class.needs_edited_image:
        summary.notes.append(f"--include-failed: --format {format} needs an edited image per example, so failed "
                             "rows are left out")
    layout = _learn_layout(readers, include_failed and not writer_class.needs_edited_image, bool(rejected))
    split = {"split": "sft"} if preference else {}
    writer: ExportWriter = writer_class(out, layout, shard_size=shard_size, image_format=image_format, **split)
    report = on_problem or (lambda problem: logger.warning("%s", problem))
    licenses: dict = {}  # the written examples' model licences, in order of appearance
    try:
        for example in _examples(readers, layout, summary, report, progress):
            images = _images(example, writer, image_format, report, summary)
            if images is None:
                continue
            writer.write(example, images)
            licenses.setdefault(example.license, None)
            summary.written += 1
            summary.rejected_written += example.rejected
            summary.failed_written += example.edited is None
        summary.shards = writer.close()
    except BaseException:
        writer.abort()
        raise
    summary.configs = [dict(writer.card_config(), examples=summary.written)] if writer.card_config() else []
    if preference:
        _export_preference(preference, format, out, paths, readers[0][1], shard_size, image_format, summary, report)
    info = run_info(path)
    info.licenses = [x for x in licenses if x != UNKNOWN_LICENSE or len(licenses) > 1]
    summary.card = write_card(out, info=info, summary=summary, configs=summary.configs, fmt=format)
    return summary


def _export_preference(file: str, format: str, out: str, paths: PathResolver, rows: RowReader,  # noqa: A002
                       shard_size: int, image_format: str, summary: ExportSummary, report) -> None:
    """The preference split: one example per pair of ``file``, written by the format's preference writer."""
    reader = PreferenceReader(paths, rows.image_key, rows.conversation_key)
    writer = PREFERENCE_WRITERS[format](out, Layout(multi=reader.multi(file)), shard_size=shard_size,
                                        image_format=image_format)
    try:
        for pair in reader.pairs(file):
            summary.preference_rows += 1
            if isinstance(pair, Problem):
                _count_problem(pair, summary, report)
                continue
            try:
                images = pair_images(pair, writer, image_format)
            except RowError as exc:
                _count_problem(Problem("missing image", f"pair {pair.key} (id {pair.id})", str(exc)), summary, report)
                continue
            writer.write(pair, images)
            summary.preference_written += 1
        summary.preference_shards = writer.close()
    except BaseException:
        writer.abort()
        raise
    summary.configs.append(dict(writer.card_config(), examples=summary.preference_written))


def _check_options(path, format, out, shard_size, include_failed, rejected, image_format,  # noqa: A002
                   preference=None) -> type:
    if format not in WRITERS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if image_format not in IMAGE_FORMATS:
        raise InputError(f"--image-format must be png or jpeg, got {image_format!r}")
    check_positive_int(shard_size=shard_size)
    RowStream(path)  # a missing or unsupported file is said now
    writer_class = WRITERS[format]
    if rejected:
        RowStream(rejected)
        if not writer_class.can_mark_rejected:
            raise InputError(f"--format {format} has no place to mark rejected examples; export them with --format "
                             "hf or webdataset")
    if preference:
        RowStream(preference)
        if format not in PREFERENCE_WRITERS:
            raise InputError(f"--format {format} has no place for preference pairs; export them with --format hf or "
                             "webdataset")
    if not out:
        raise InputError("--out is required: the folder to export into")
    for given in [path] + [f for f in (rejected, preference) if f]:
        if os.path.abspath(out) == os.path.abspath(given):
            raise InputError(f"--out {out} is the input file itself")
    ensure_writable_folder(out, "export folder")
    writer_class.check_dependencies()
    return writer_class


def _learn_layout(readers, include_failed: bool, with_rejected: bool) -> Layout:
    """The first pass: every score name (and its type), whether any row has several sources, and whether any
    names its edit type."""
    layout = Layout(include_failed=include_failed, with_rejected=with_rejected)
    for file, reader in readers:
        for row in RowStream(file, skip_malformed_lines=True):
            layout.edit_type |= isinstance(row.get(EDIT_TYPE_KEY), str)
            if reader.is_failed(row):
                continue
            images = row.get(reader.image_key)
            layout.multi |= isinstance(images, (list, tuple)) and len(images) > 1
            scores = row.get(SCORE_KEY)
            if isinstance(scores, list) and len(scores) == len(outputs_of(row, reader.output_key)):
                for entry in scores:
                    layout.scores.observe(entry)
    return layout


def _examples(readers, layout: Layout, summary: ExportSummary, report, progress: bool) -> Iterator[Example]:
    """The second pass: the examples to write, in file order; problems and left-out failed rows are counted."""
    for file, reader in readers:
        rows = RowStream(file, skip_malformed_lines=True)
        numbered = rows.numbered()
        if progress:
            from tqdm import tqdm

            numbered = tqdm(numbered, total=rows.count(), unit="row", file=sys.stderr,
                            desc=os.path.basename(file), disable=None)
        for index, (line, row) in enumerate(numbered):
            summary.rows += 1
            where = f"{os.path.basename(file)} line {line}" if line else f"{os.path.basename(file)} row {index + 1}"
            if reader.is_failed(row) and not layout.include_failed:
                summary.skipped_failed += 1
                continue
            for item in reader.examples(index, row, where):
                if isinstance(item, Problem):
                    _count_problem(item, summary, report)
                    continue
                item.scores = layout.scores.flatten(item.score_entry) if item.score_entry is not None else {}
                yield item


def _images(example: Example, writer: ExportWriter, image_format: str, report, summary: ExportSummary
            ) -> Optional[ExampleImages]:
    """The example's images as stored, or None (counted and reported) when one cannot be read."""
    try:
        sources = [encode_file(p, image_format, keep_bytes=writer.keep_source_bytes) for p in example.sources]
        edited = encode_file(example.edited, image_format) if example.edited else None
    except RowError as exc:
        _count_problem(Problem("missing image", f"example {example.key} (id {example.id})", str(exc)), summary,
                       report)
        return None
    return ExampleImages(sources, edited)


def _count_problem(problem: Problem, summary: ExportSummary, report) -> None:
    if problem.kind == "bad row":
        summary.bad_rows += 1
    else:
        summary.missing_images += 1
    report(problem)
