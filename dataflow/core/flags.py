"""Command-line flags spelled two ways: ``--ray-address`` (the CLI) or ``--ray_address`` (the seed script).

The engine and speed options are defined once, beside the code that reads them, and added to either parser.
Messages name options by their CLI flags; ``flag_respeller`` rewrites them for a seed script.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Optional


def flag_name(name: str, separator: str = "-") -> str:
    """``--`` and ``name`` with its underscores spelled as ``separator``."""
    return "--" + name.replace("_", separator)


def flag_adder(parser: Any, separator: str = "-") -> Callable[..., None]:
    """``add(name, **kwargs)``: ``parser.add_argument`` under ``flag_name(name, separator)``; the parsed value keeps
    the underscored ``name`` either way."""

    def add(name: str, **kwargs: Any) -> None:
        parser.add_argument(flag_name(name, separator), **kwargs)

    return add


# Messages name an option by its CLI flag (``--skip-malformed-lines``); an interface that spells its flags
# otherwise (a seed script) respells them before showing a message, so a hint names a flag the user can type.
_CLI_FLAG = re.compile(r"(?<![\w-])--[A-Za-z0-9][\w-]*")


def flag_respeller(parser: Any, renamed: Optional[Mapping[str, str]] = None) -> Callable[[str], str]:
    """A function that rewrites each CLI flag in a message as ``parser`` spells the same option:
    ``--skip-malformed-lines`` -> ``--skip_malformed_lines`` where the parser has that flag, and the CLI flags
    whose option has another name there through ``renamed`` (``{"--model": "--hf_model_name_or_path"}``). A
    flag with no counterpart in ``parser`` is left as it is."""
    spelling = {flag.replace("_", "-"): flag for action in parser._actions for flag in action.option_strings
                if flag.startswith("--")}
    spelling.update(renamed or {})

    def respell(message: str) -> str:
        return _CLI_FLAG.sub(lambda match: spelling.get(match.group(0), match.group(0)), message)

    return respell
