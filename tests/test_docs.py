"""The documentation against the code: commands that parse, links that resolve, a layout that matches the tree.

A reader copies a command from the README or from docs/ and expects it to run; a renamed flag, a link to a moved
page or a folder that no longer exists would each send them wrong without any other test noticing.
"""

import argparse
import contextlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from typing import Iterator, Optional

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", *sorted(os.path.join("docs", name) for name in os.listdir(os.path.join(REPO, "docs"))
                             if name.endswith(".md")), os.path.join("benchmarks", "README.md")]
FENCE = re.compile(r"^\s*(```|~~~)")
SEED_SCRIPT = re.compile(r"^dataflow/statics/pipelines/.+\.py$")
SHELL_SEPARATORS = {"|", "||", "&&", ";", "&", ")", "("}
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*")  # N, URL, PATH_OR_ID: a value to fill in


def read(doc: str) -> str:
    with open(os.path.join(REPO, doc), encoding="utf-8") as handle:
        return handle.read()


def split_markdown(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(code lines, prose lines), each as (1-based line number, text); fence lines belong to neither."""
    code, prose, fenced = [], [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        elif fenced:
            code.append((number, line))
        else:
            prose.append((number, line))
    return code, prose


def inline_code(line: str) -> list[str]:
    return re.findall(r"`([^`]+)`", line)


def logical_lines(code: list[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """Code lines with continuations joined, numbered by their first line: a trailing backslash (shell), or a next
    line that starts with ``[`` (a synopsis wrapped over several lines)."""
    joined = []  # [first line, last line, text, continued]
    for number, line in code:
        text, continued = line.rstrip(), line.rstrip().endswith("\\")
        if continued:
            text = text[:-1]
        if joined and joined[-1][1] == number - 1 and (joined[-1][3] or text.lstrip().startswith("[")):
            joined[-1][1:] = [number, joined[-1][2] + " " + text, continued]
        else:
            joined.append([number, number, text, continued])
    for first, _, text, _ in joined:
        yield first, text


def shown_lines(doc: str) -> Iterator[tuple[int, str]]:
    """Every line of code a reader may copy: code blocks (continuations joined) and inline code spans."""
    code, prose = split_markdown(read(doc))
    spans = [(number, span) for number, line in prose for span in inline_code(line)]
    yield from sorted([*logical_lines(code), *spans], key=lambda shown: shown[0])


def alternatives(line: str) -> list[str]:
    """A synopsis such as ``--backend flux-kontext|classic|api`` as one line per alternative (a pipe between two
    words, with no space, is a choice; a shell pipe has spaces around it)."""
    choices = re.compile(r"(?<![|\w])([\w.:/-]+(?:\|[\w.:/-]+)+)(?![|\w])")
    groups = [match.group(1).split("|") for match in choices.finditer(line)]
    if not groups:
        return [line]
    variants = []
    for index in range(max(len(group) for group in groups)):
        variants.append(choices.sub(lambda match: match.group(1).split("|")[min(index, match.group(1).count("|"))],
                                    line))
    return variants


def shell_words(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def commands_in(line: str) -> Iterator[tuple[str, list[str]]]:
    """(program, arguments) of each ``dataflow-edit`` or seed-script command in a shell line; ``[ ]`` of an
    optional part and ``...`` are dropped."""
    for variant in alternatives(line):
        try:
            words = shell_words(variant)
        except ValueError:  # an unbalanced quote: prose, not a command
            continue
        for index, word in enumerate(words):
            if word == "dataflow-edit":
                program, rest = word, words[index + 1:]
            elif word in ("python", "python3") and index + 1 < len(words) and SEED_SCRIPT.match(words[index + 1]):
                program, rest = words[index + 1], words[index + 2:]
            else:
                continue
            args = []
            for arg in rest:
                if arg in SHELL_SEPARATORS:
                    break
                arg = arg.strip("[]")
                if arg and arg not in ("...", "…"):
                    args.append(arg)
            yield program, args


def subcommand_parser(parser: argparse.ArgumentParser, args: list[str]) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and args and args[0] in action.choices:
            return action.choices[args[0]]
    return parser


def fill_placeholders(parser: argparse.ArgumentParser, args: list[str]) -> list[str]:
    """A placeholder after a flag becomes a value of the flag's type (argparse checks ints, floats and choices);
    a placeholder elsewhere (INPUT.jsonl, a positional) is a word like any other."""
    options = subcommand_parser(parser, args)._option_string_actions
    filled = list(args)
    for index in range(1, len(filled)):
        action = options.get(filled[index - 1])
        if action is None or not PLACEHOLDER.fullmatch(filled[index]):
            continue
        if action.choices:
            filled[index] = str(list(action.choices)[0])
        elif action.type is int:
            filled[index] = "1"
        elif action.type is float:
            filled[index] = "0.5"
    return filled


def cli_parser() -> argparse.ArgumentParser:
    from dataflow.cli.main import build_parser

    return build_parser()


def script_parser(path: str) -> argparse.ArgumentParser:
    full = os.path.join(REPO, path)
    if not os.path.isfile(full):
        raise FileNotFoundError(f"{path} does not exist")
    spec = importlib.util.spec_from_file_location("doc_script_" + re.sub(r"\W", "_", path), full)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


def parse_error(parser: argparse.ArgumentParser, args: list[str]) -> Optional[str]:
    """None if ``args`` parse, else argparse's message."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(fill_placeholders(parser, args))
    except SystemExit as exit_info:
        if exit_info.code == 0 and ("--help" in args or "-h" in args or "--version" in args):
            return None
        return stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else f"exit {exit_info.code}"
    return None


def documented_commands(doc: str) -> Iterator[tuple[int, str, list[str]]]:
    for number, line in shown_lines(doc):
        for program, args in commands_in(line):
            if program == "dataflow-edit" and not args:  # the tool's name in a sentence
                continue
            yield number, program, args


def check_commands(doc: str) -> tuple[int, list[str]]:
    """(how many commands were checked, a message per command that does not parse)."""
    parsers, failures, checked = {}, [], 0
    for number, program, args in documented_commands(doc):
        shown = " ".join([program, *args])
        try:
            if program not in parsers:
                parsers[program] = cli_parser() if program == "dataflow-edit" else script_parser(program)
            error = parse_error(parsers[program], args)
        except Exception as exc:  # a missing script, or one without build_parser()
            error = f"{type(exc).__name__}: {exc}"
        checked += 1
        if error:
            failures.append(f"{doc}:{number}: `{shown}`: {error}")
    return checked, failures


@pytest.mark.parametrize("doc", DOCS)
def test_every_command_shown_parses(doc):
    checked, failures = check_commands(doc)
    assert not failures, "\n".join(failures)


def test_the_docs_show_commands_of_both_kinds():
    """Not vacuous: the extraction finds the README's commands, continuations and inline spans included."""
    found = [(doc, number, program, args) for doc in DOCS for number, program, args in documented_commands(doc)]
    readme = [args for doc, _, program, args in found if doc == "README.md" and program == "dataflow-edit"]
    assert len(readme) >= 5, readme
    assert any("--max-concurrency" in args and "--api-url" in args for args in readme)  # joined continuation
    assert any(SEED_SCRIPT.match(program) for _, _, program, _ in found)
    assert sum(program == "dataflow-edit" for _, _, program, _ in found) >= 15


def test_a_command_the_parser_refuses_is_reported_with_its_line(tmp_path, monkeypatch):
    doc = tmp_path / "bad.md"
    doc.write_text("Intro with `dataflow-edit run in.jsonl --turbo`.\n\n```bash\ndataflow-edit run in.jsonl \\\n"
                   "    --steps N --backend flux-kontext|classic|nope\ndataflow-edit run in.jsonl --steps N\n```\n",
                   encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "REPO", str(tmp_path))
    checked, failures = check_commands("bad.md")
    assert checked == 5  # the inline span, three alternatives, the last line
    assert [failure.split(":")[1] for failure in failures] == ["1", "4"], failures
    assert "--turbo" in failures[0] and "invalid choice: 'nope'" in failures[1]


# Links ---------------------------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def git_files(*options: str) -> Optional[set[str]]:
    """Paths git knows in this checkout (``ls-files`` with ``options``), or None outside a git checkout."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", *options], cwd=REPO, capture_output=True, check=True,
                                timeout=60).stdout.decode()
    except (OSError, subprocess.SubprocessError):
        return None
    return {path for path in listed.split("\0") if path}


def with_folders(files: set[str]) -> set[str]:
    folders = {os.path.dirname(path) for path in files}
    while True:
        more = {os.path.dirname(folder) for folder in folders} - folders
        if not more:
            return (files | folders) - {""}
        folders |= more


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, formatting and punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(doc: str) -> set[str]:
    _, prose = split_markdown(read(doc))
    seen, result = {}, set()
    for _, line in prose:
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(doc: str) -> Iterator[tuple[int, str]]:
    _, prose = split_markdown(read(doc))
    for number, line in prose:
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            yield number, target


@pytest.mark.parametrize("doc", DOCS)
def test_every_relative_link_resolves(doc):
    """A link must reach a file of the repository (not one that is ignored or only on this machine), and an
    anchor a heading of that page."""
    known = git_files("--cached", "--others", "--exclude-standard")
    known = with_folders(known) if known is not None else None
    failures = []
    for number, target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
        exists = resolved in known if known is not None else os.path.exists(os.path.join(REPO, resolved))
        if resolved.startswith("..") or not exists:
            failures.append(f"{doc}:{number}: {target}: no such file in the repository")
        elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
            failures.append(f"{doc}:{number}: {target}: {resolved} has no heading #{anchor}")
    assert not failures, "\n".join(failures)


def test_links_and_anchors_are_found():
    assert slug("The `dataflow-edit` command") == "the-dataflow-edit-command"
    assert slug("Reliability: resume, checkpoints, errors, exit codes") == \
        "reliability-resume-checkpoints-errors-exit-codes"
    readme_links = [target for _, target in links("README.md")]
    assert "docs/images/gallery.png" in readme_links and "docs/performance.md" in readme_links


# Layout --------------------------------------------------------------------------------------------------------

FILE_WORD = re.compile(r"(?<![\w/.-])([\w.-]+\.(?:py|sh|md|jsonl|json|toml|txt|csv|html|png|jpg))(?![\w/-])")
FOLDER_WORD = re.compile(r"(?<![\w/.-])([\w.-]+/)(?![\w/.-])")
CONTINUATION_INDENT = 16  # a description's continuation lines start in the description column


def layout_entries(doc: str = os.path.join("docs", "development.md")) -> list[tuple[int, str, int]]:
    """(line, path, depth) of every folder and file the layout block draws or names: each entry's own path, and
    the files (``main.py``) and folders (``images/``) named in its description, relative to that entry."""
    code, prose = split_markdown(read(doc))
    start = next(number for number, line in prose if line.strip() == "## Layout")
    block = []
    for number, line in code:
        if number < start:
            continue
        if block and number != block[-1][0] + 1:
            break
        block.append((number, line))
    assert block, f"{doc} has no layout block after '## Layout'"
    entries, parents, folder = [], [], ""
    for number, line in block:
        indent = len(line) - len(line.lstrip(" "))
        if indent >= CONTINUATION_INDENT:
            description = line
        else:
            assert indent % 2 == 0 and indent // 2 <= len(parents), f"{doc}:{number}: bad indentation"
            name, _, description = line.strip().partition(" ")
            parents = parents[:indent // 2]
            current = "/".join([*parents, name.rstrip("/")])
            entries.append((number, current + ("/" if name.endswith("/") else ""), indent // 2))
            folder = current if name.endswith("/") else os.path.dirname(current)
            if name.endswith("/"):
                parents.append(name.rstrip("/"))
        for word in FILE_WORD.findall(description) + FOLDER_WORD.findall(description):
            entries.append((number, os.path.join(folder, word) if folder else word, -1))
    return entries


def test_the_layout_names_only_paths_in_the_repository():
    files = git_files("--cached", "--others", "--exclude-standard")
    if files is None:
        pytest.skip("not a git checkout")
    known = with_folders(files)
    entries = layout_entries()
    assert len(entries) >= 30, entries  # folders and key modules
    missing = [f"docs/development.md:{number}: {path}" for number, path, _ in entries
               if path.rstrip("/") not in known or (path.endswith("/") and path.rstrip("/") in files)]
    assert not missing, "the layout names paths that are not in the repository:\n" + "\n".join(missing)


def test_the_layout_draws_every_top_level_folder_and_package():
    """The other way round: a committed top-level folder, or a sub-package of dataflow/, missing from the layout."""
    committed = git_files("--cached")
    if committed is None:
        pytest.skip("not a git checkout")
    drawn = {path.rstrip("/") for _, path, depth in layout_entries() if depth >= 0}
    folders = {path.split("/")[0] for path in committed if "/" in path}
    packages = {"/".join(path.split("/")[:2]) for path in committed
                if path.startswith("dataflow/") and path.count("/") >= 2}
    lacking = sorted((folders | packages) - drawn)
    assert not lacking, f"the layout in docs/development.md lacks {lacking}"


def test_the_torch_pin_named_in_development_md_is_the_makefiles():
    """development.md said torch 2.13.0 while the Makefile pinned 2.14.1."""
    (pins,) = re.findall(r"^TORCH \?= (.+)$", read("Makefile"), re.M)
    for pin in pins.split():
        assert f"`{pin}`" in read(os.path.join("docs", "development.md")), pin


def test_the_readme_demo_without_make_activates_the_venv_make_demo_made():
    """Run as shown after `make demo`, the command failed: `dataflow-edit: command not found`."""
    text = read("README.md")
    command = "dataflow-edit run dataflow/example/image_edit/demo.jsonl --backend classic --out demo_output"
    block = text[:text.index(command)].rsplit("```bash", 1)[1]
    assert "source .venv/bin/activate" in block
