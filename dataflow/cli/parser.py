"""The argument parser of every command line here (``dataflow-edit``, its subcommands, the seed scripts).

Two things differ from argparse's defaults. Abbreviated flags are refused: with them ``--output runs/e2`` was
taken as ``--output-key runs/e2``, so a run silently wrote to the default folder and named a column after the
folder. And ``--help`` shows each flag's default.
"""

from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after a flag's help, where X says something: not for ``None``, off switches or ``[]``."""

    def _get_help_string(self, action: argparse.Action) -> str:
        default = action.default
        if default is None or default is False or default == [] or default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` without abbreviations and with defaults in ``--help``; its subcommands'
    parsers (``add_subparsers().add_parser``) are of this class too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)
