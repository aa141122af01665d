"""A before/after gallery of a run: one HTML page showing each row's input, instruction and outputs.

The page is written beside the output file and named after it (``edited_step1.jsonl`` gets
``edited_step1.gallery.html``), so each step of a run (edit, score, filter) keeps its own page. It references only
files inside its own folder, through relative URLs: thumbnails in ``gallery_files/<output file's stem>/`` and, as
links, full-size outputs that lie under that folder. So it still works when the output folder is moved, copied to
another machine or opened from disk (``file://``). It is plain HTML with inline CSS: no script, no external
resource. Rebuilding gives the same files for the same inputs (no timestamps), and thumbnails are named after the
row index, so a rebuild overwrites. Long texts (a 10 MB instruction, a long error) are shown by their start and
length.
"""

from __future__ import annotations

import html
import io
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence
from urllib.parse import quote

from dataflow.core.errors import InputError, RowError
from dataflow.core.rows import image_path, instruction, is_missing
from dataflow.core.text import shorten
from dataflow.core.validation import check_positive_int
from dataflow.io.atomic import atomic_open, atomic_write_bytes
from dataflow.io.image_io import ImageIO
from dataflow.logger import get_logger
from dataflow.utils.manifest import find_output_image, run_folders
from dataflow.utils.storage import read_records

GALLERY_SUFFIX = ".gallery.html"
FILES_DIR = "gallery_files"
THUMB_QUALITY = 85
_THUMB_NAME = re.compile(r"^row\d+_(in|out\d+)\.jpg$")
_RAW_PREVIEW_CHARS = 300
_TEXT_PREVIEW_CHARS = 2000  # of an instruction or an error
_MAX_WORKERS = 8
logger = get_logger()


@dataclass
class _Picture:
    """One image cell: a thumbnail URL relative to the page and its size, the full-size file's link and size, or
    why there is none."""

    thumb: Optional[str] = None
    width: int = 0
    height: int = 0
    full_width: int = 0
    full_height: int = 0
    link: Optional[str] = None
    problem: Optional[str] = None


@dataclass
class _RowView:
    """What the page shows of one row; every string is still raw text, escaped only when rendered."""

    index: int
    status: str
    row_id: Optional[str]
    instruction: Optional[str]
    instruction_problem: Optional[str]
    raw_conversation: Optional[str]
    source: _Picture
    outputs: list = field(default_factory=list)
    error: Optional[str] = None
    scores: list = field(default_factory=list)  # per output, its scores (``dataflow-edit score``) or None
    rejected_because: Optional[str] = None  # a filter step's reasons, for its rejected file
    ranking: list = field(default_factory=list)  # best-of-N (``dataflow-edit select``): candidates, best first


# -- public API ------------------------------------------------------------------------------------------------
def build_gallery(
    output_file: str,
    *,
    input_dir: str | None = None,
    run_dir: str | None = None,
    image_key: str = "images",
    conversation_key: str = "conversations",
    output_key: str = "output_image",
    limit: int | None = 1000,
    thumb_size: int = 320,
) -> str:
    """Write ``<stem>.gallery.html`` and ``gallery_files/<stem>/`` beside ``output_file``; return the page's path.

    Args:
        output_file: a run's output file (jsonl, json, csv or parquet, judged by its extension).
        input_dir: folder that relative input image paths are resolved against (the input file's folder).
            Defaults to the output file's folder.
        run_dir: working directory the run was started in; relative output paths are resolved against it first,
            then against the output file's folder. Defaults to the output file's folder.
        image_key, conversation_key, output_key: field names in the rows; failed rows carry
            ``f"{output_key}_error"``.
        limit: show at most this many rows (the first ones); ``None`` shows all. Counts always cover every row.
        thumb_size: longest side of a thumbnail, in pixels.
    """
    _check_options(limit, thumb_size)
    output_file = os.path.abspath(output_file)
    gallery_dir = os.path.dirname(output_file)
    rows = read_records(output_file, skip_malformed_lines=True)
    stem = os.path.splitext(os.path.basename(output_file))[0]
    builder = _GalleryBuilder(
        gallery_dir=gallery_dir,
        files_dir=os.path.join(gallery_dir, FILES_DIR, stem),
        input_dir=os.path.abspath(input_dir) if input_dir else gallery_dir,
        run_dir=os.path.abspath(run_dir) if run_dir else gallery_dir,
        image_key=image_key,
        conversation_key=conversation_key,
        output_key=output_key,
        thumb_size=thumb_size,
    )
    shown = rows if limit is None else rows[:limit]
    views = builder.build_views(shown)
    builder.remove_stale_thumbnails()
    counts = _count(rows, output_key)
    key = f"{output_key}_license"
    licenses = list(dict.fromkeys(str(row[key]) for row in rows if not _blank(row.get(key))))
    page = _render_page(os.path.basename(output_file), views, counts, len(rows), licenses)
    path = gallery_path(output_file)
    with atomic_open(path) as handle:
        handle.write(page)
    logger.info("wrote gallery of %d of %d rows to %s", len(views), len(rows), path)
    return path


def gallery_path(output_file: str) -> str:
    """Where the gallery of ``output_file`` goes: ``out/edited_step1.jsonl`` -> ``out/edited_step1.gallery.html``."""
    return os.path.splitext(os.path.abspath(output_file))[0] + GALLERY_SUFFIX


def build_gallery_from_manifest(output_file: str, *, limit: int | None = 1000, thumb_size: int = 320) -> str:
    """Build the gallery with the folders and field names recorded in ``run.json`` beside ``output_file``.

    The manifest holds ``input`` (the input file), ``cwd`` (the run's working directory) and the three keys.
    Without a usable manifest, both folders fall back to the output file's folder and the keys to their defaults.
    """
    folders = run_folders(output_file)
    return build_gallery(output_file, input_dir=folders.input_dir, run_dir=folders.run_dir, limit=limit,
                         thumb_size=thumb_size, **folders.keys)


# -- building the views ----------------------------------------------------------------------------------------
class _GalleryBuilder:
    """Turns rows into views, writing the thumbnails they need into ``gallery_files/`` on the way."""

    def __init__(self, *, gallery_dir, files_dir, input_dir, run_dir, image_key, conversation_key, output_key,
                 thumb_size):
        self.gallery_dir = gallery_dir
        self.files_dir = files_dir
        self.input_dir = input_dir
        self.run_dir = run_dir
        self.image_key = image_key
        self.conversation_key = conversation_key
        self.output_key = output_key
        self.error_key = f"{output_key}_error"
        self.thumb_size = thumb_size
        self.image_io = ImageIO()
        self.written: set[str] = set()

    def build_views(self, rows: list[dict]) -> list[_RowView]:
        """One view per row, in order. Thumbnails are made in threads: decoding and resizing release the GIL."""
        os.makedirs(self.files_dir, exist_ok=True)
        workers = max(1, min(_MAX_WORKERS, os.cpu_count() or 1, len(rows)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(self.row_view, range(len(rows)), rows))

    def row_view(self, index: int, row: Mapping[str, Any]) -> _RowView:
        """The view of one row: its id, instruction (or why it is unusable), input, outputs and error."""
        text, problem, raw = _instruction_of(row, self.conversation_key)
        error = row.get(self.error_key)
        outputs = [self.output_picture(index, k, v) for k, v in enumerate(_as_list(row.get(self.output_key)))]
        ranking = _ranking_of(row)
        for entry in ranking:
            entry["picture"] = self.output_picture(index, entry["index"], entry["image"])
        return _RowView(
            index=index,
            status=_status(row, self.output_key),
            row_id=None if _blank(row.get("id")) else str(row.get("id")),
            instruction=text,
            instruction_problem=problem,
            raw_conversation=raw,
            source=self.input_picture(index, row),
            outputs=outputs,
            error=None if _blank(error) else shorten(str(error), _TEXT_PREVIEW_CHARS),
            scores=_scores_of(row, len(outputs)),
            rejected_because=", ".join(map(str, _as_list(row.get("rejected_because")))) or None,
            ranking=ranking,
        )

    def input_picture(self, index: int, row: Mapping[str, Any]) -> _Picture:
        try:
            path = image_path(row, self.image_key, self.input_dir)
        except RowError as exc:
            return _Picture(problem=str(exc))
        return self.picture(path, f"row{index}_in.jpg")

    def output_picture(self, index: int, k: int, value: Any) -> _Picture:
        try:
            path = self.resolve_output(value)
        except RowError as exc:
            return _Picture(problem=str(exc))
        return self.picture(path, f"row{index}_out{k}.jpg")

    def resolve_output(self, value: Any) -> str:
        """An output path as the run wrote it, made absolute (see ``find_output_image``)."""
        return find_output_image(value, self.run_dir, self.gallery_dir)

    def picture(self, source: str, name: str) -> _Picture:
        """Decode ``source``, write its thumbnail as ``gallery_files/<name>``, and describe the cell."""
        try:
            image = self.image_io.read(source)
        except RowError as exc:
            return _Picture(problem=str(exc))
        full_width, full_height = image.size
        image.thumbnail((self.thumb_size, self.thumb_size))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=THUMB_QUALITY)
        atomic_write_bytes(os.path.join(self.files_dir, name), buffer.getvalue())
        self.written.add(name)
        thumb = os.path.relpath(os.path.join(self.files_dir, name), self.gallery_dir)
        return _Picture(thumb=_url(thumb), width=image.width, height=image.height, full_width=full_width,
                        full_height=full_height, link=self.link_to(source))

    def link_to(self, source: str) -> Optional[str]:
        """A relative URL to ``source`` when it lies inside the gallery's folder tree, so links survive a move."""
        root = os.path.realpath(self.gallery_dir)
        target = os.path.realpath(source)
        if os.path.commonpath([root, target]) != root:
            return None
        return _url(os.path.relpath(target, root))

    def remove_stale_thumbnails(self) -> None:
        """Delete thumbnails an earlier, larger build left that this build did not write."""
        for name in os.listdir(self.files_dir):
            if _THUMB_NAME.match(name) and name not in self.written:
                os.unlink(os.path.join(self.files_dir, name))


# -- rows ------------------------------------------------------------------------------------------------------
def _instruction_of(row: Mapping[str, Any], key: str) -> tuple[Optional[str], Optional[str], Optional[str]]:
    """(instruction, None, None), or (None, the problem, a preview of the raw value) when it cannot be read."""
    try:
        return shorten(instruction(row, key), _TEXT_PREVIEW_CHARS), None, None
    except RowError as exc:
        raw = json.dumps(row.get(key), ensure_ascii=False, default=str)
        if len(raw) > _RAW_PREVIEW_CHARS:
            raw = raw[:_RAW_PREVIEW_CHARS] + "…"
        return None, str(exc), raw


def _status(row: Mapping[str, Any], output_key: str) -> str:
    """"failed" when the row carries an error, "done" when it has outputs, else "empty"."""
    if not _blank(row.get(f"{output_key}_error")):
        return "failed"
    return "done" if any(not _blank(v) for v in _as_list(row.get(output_key))) else "empty"


def _count(rows: list[dict], output_key: str) -> dict[str, int]:
    counts = {"rows": len(rows), "done": 0, "failed": 0, "empty": 0}
    for row in rows:
        counts[_status(row, output_key)] += 1
    return counts


def _as_list(value: Any) -> list:
    if _blank(value):
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _blank(value: Any) -> bool:
    return is_missing(value) or value == ""


# -- files -----------------------------------------------------------------------------------------------------
def _check_options(limit: Optional[int], thumb_size: int) -> None:
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise InputError(f"limit must be None or a non-negative integer, got {limit!r}")
    check_positive_int(thumb_size=thumb_size)


def _url(relative_path: str) -> str:
    """A relative path as a URL: forward slashes, and characters like spaces, '#' or '%' percent-encoded."""
    return quote(relative_path.replace(os.sep, "/"))


# -- HTML ------------------------------------------------------------------------------------------------------
_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.3em; margin: 0 0 .3em; }
.counts { margin: .2em 0; }
.truncated { color: #8a5a00; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { border: 1px solid #ddd; padding: .5em; vertical-align: top; text-align: left; }
th { background: #eee; }
tr.failed td { background: #fff4f4; }
img { display: block; max-width: none; height: auto; border: 1px solid #ccc; }
.pictures { display: flex; flex-wrap: wrap; gap: .5em; }
.note { color: #666; font-style: italic; word-break: break-word; }
.scores { font-size: .8em; color: #333; max-width: 20em; }
.edit { display: inline-block; vertical-align: top; margin-right: .5em; }
.candidate.chosen img { outline: 3px solid #1a7f37; } .candidate.chosen .rank { color: #1a7f37; font-weight: bold; }
.error { color: #a00; white-space: pre-wrap; word-break: break-word; margin-top: .4em; }
.instruction { max-width: 30em; white-space: pre-wrap; word-break: break-word; }
.id { color: #666; font-size: .85em; white-space: nowrap; max-width: 16em; overflow: hidden; text-overflow: ellipsis; }
.size { color: #666; font-size: .8em; }
pre.raw { white-space: pre-wrap; word-break: break-all; font-size: .85em; margin: .3em 0 0; }
"""


def _render_page(source_name: str, views: list[_RowView], counts: dict[str, int], total: int,
                 licenses: Sequence[str] = ()) -> str:
    """The whole page: a header with the counts and the editing model's licence, then one table row per shown
    row."""
    title = f"Gallery of {source_name}"
    body = "\n".join(_render_row(view) for view in views)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<header>\n<h1>{_esc(title)}</h1>\n{_render_counts(counts, len(views), total)}{_render_licenses(licenses)}"
        "</header>\n"
        "<table>\n<thead><tr><th>#</th><th>input</th><th>instruction</th><th>output</th></tr></thead>\n"
        f"<tbody>\n{body}\n</tbody>\n</table>\n</body>\n</html>\n"
    )


def _render_licenses(licenses: Sequence[str]) -> str:
    if not licenses:
        return ""
    return f"<p class=\"license\">Model licence: {_esc(', '.join(licenses))}</p>\n"


def _render_counts(counts: dict[str, int], shown: int, total: int) -> str:
    rows = counts["rows"]
    parts = [f"{rows} row" if rows == 1 else f"{rows} rows", f"{counts['done']} done", f"{counts['failed']} failed"]
    if counts["empty"]:
        parts.append(f"{counts['empty']} without output")
    text = f"<p class=\"counts\">{' · '.join(parts)}</p>\n"
    if shown < total:
        text += f"<p class=\"truncated\">Showing the first {shown} of {total} rows (limit).</p>\n"
    return text


def _render_row(view: _RowView) -> str:
    row_id = f"<div class=\"id\" title=\"{_esc(view.row_id)}\">id: {_esc(view.row_id)}</div>" if view.row_id else ""
    index = f"{view.index}{row_id}"
    return (
        f"<tr class=\"{view.status}\" id=\"row-{view.index}\">"
        f"<td>{index}</td>"
        f"<td>{_render_picture(view.source, 'input')}</td>"
        f"<td class=\"instruction\">{_render_instruction(view)}</td>"
        f"<td>{_render_outputs(view)}</td></tr>"
    )


def _render_instruction(view: _RowView) -> str:
    if view.instruction is not None:
        return _esc(view.instruction)
    return (
        f"<div class=\"note\">instruction unavailable: {_esc(view.instruction_problem)}</div>"
        f"<pre class=\"raw\">{_esc(view.raw_conversation)}</pre>"
    )


def _render_outputs(view: _RowView) -> str:
    parts = []
    if view.ranking:
        parts.append(_render_candidates(view.ranking))
    elif view.outputs and any(view.scores):
        edits = "".join(f"<div class=\"edit\">{_render_picture(p, f'output {k}')}{_render_scores(s)}</div>"
                        for k, (p, s) in enumerate(zip(view.outputs, view.scores)))
        parts.append(f"<div class=\"pictures\">{edits}</div>")
    elif view.outputs:
        pictures = "".join(_render_picture(p, f"output {k}") for k, p in enumerate(view.outputs))
        parts.append(f"<div class=\"pictures\">{pictures}</div>")
    if view.error is not None:
        parts.append(f"<div class=\"error\">error: {_esc(view.error)}</div>")
    if view.rejected_because is not None:
        parts.append(f"<div class=\"error\">rejected because: {_esc(view.rejected_because)}</div>")
    if not parts:
        parts.append("<div class=\"note\">no output</div>")
    return "".join(parts)


def _ranking_of(row: Mapping[str, Any]) -> list:
    """A select step's candidates in rank order (``selection.ranked``: index, value, image, split), else []."""
    selection = row.get("selection")
    ranked = selection.get("ranked") if isinstance(selection, Mapping) else None
    if not isinstance(ranked, list) or not all(isinstance(e, Mapping) and "image" in e for e in ranked):
        return []
    return [dict(entry, metric=selection.get("metric"), chosen=entry.get("index") == selection.get("chosen"))
            for entry in ranked]


def _render_candidates(ranking: list) -> str:
    """A row's candidates side by side, best first, each with its rank, score and split; the chosen one framed."""
    cells = []
    for rank, entry in enumerate(ranking, 1):
        value = entry.get("value")
        score = f"{entry.get('metric')} {value:.3g}" if isinstance(value, (int, float)) else "no score"
        label = f"#{rank} · candidate {entry.get('index')} · {score} · {entry.get('split')}"
        label += " (chosen)" if entry["chosen"] else ""
        framed = "edit candidate chosen" if entry["chosen"] else "edit candidate"
        picture = _render_picture(entry["picture"], f"candidate {entry.get('index')}")
        cells.append(f"<div class=\"{framed}\">{picture}<div class=\"scores rank\">{_esc(label)}</div></div>")
    return f"<div class=\"pictures\">{''.join(cells)}</div>"


def _render_scores(scores: Optional[Mapping]) -> str:
    """One edit's scores as ``clip_t 0.312 · dino 0.871 · judge.overall 6.32``; a judge's reason as a tooltip."""
    if not scores:
        return ""
    values, reasons = [], []
    for path, value in _score_leaves(scores):
        name = ".".join(path) if path[0] == "judge" else path[-1]  # the names a filter rule takes
        if path[-1] == "reason":
            reasons.append(str(value))
        elif isinstance(value, float):
            values.append(f"{name} {value:.3g}")
        else:
            values.append(f"{name} {value}")
    title = f" title=\"{_esc(' '.join(reasons))}\"" if reasons else ""
    return f"<div class=\"scores\"{title}>{_esc(' · '.join(values))}</div>"


def _score_leaves(scores: Mapping, prefix: tuple = ()):
    for key, value in scores.items():
        if isinstance(value, Mapping):
            yield from _score_leaves(value, prefix + (str(key),))
        else:
            yield prefix + (str(key),), value


def _scores_of(row: Mapping[str, Any], outputs: int) -> list:
    """The row's ``scores`` entry per output when it has one aligned with them, else Nones."""
    scores = row.get("scores")
    if isinstance(scores, list) and len(scores) == outputs and all(isinstance(s, Mapping) for s in scores):
        return list(scores)
    return [None] * outputs


def _render_picture(picture: _Picture, label: str) -> str:
    """A thumbnail, linked to the full-size file when there is a link, over the full-size image's width x height;
    else a note saying why it is missing."""
    if picture.thumb is None:
        return f"<div class=\"note\">{_esc(label)} image unavailable: {_esc(picture.problem)}</div>"
    img = (
        f"<img src=\"{_esc(picture.thumb)}\" width=\"{picture.width}\" height=\"{picture.height}\" "
        f"alt=\"{_esc(label)}\" loading=\"lazy\">"
    )
    linked = f"<a href=\"{_esc(picture.link)}\">{img}</a>" if picture.link else img
    return f"{linked}<div class=\"size\">{picture.full_width}×{picture.full_height}</div>"


def _esc(text: Optional[str]) -> str:
    return html.escape(text or "", quote=True)
