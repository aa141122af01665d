"""Exit codes shared by the ``dataflow-edit`` CLI and the seed pipeline script.

0: every row done. 1: some rows failed (all else written) or the run itself broke. 2: usage or validation error,
nothing generated. 128+N: stopped by signal N (130 for Ctrl-C, 143 for SIGTERM) after saving progress.
"""

from __future__ import annotations

import signal
import sys
from typing import Callable, Optional

from dataflow.core.errors import DataflowError, RunInterrupted

EXIT_OK = 0
EXIT_ROWS_FAILED = 1
EXIT_USAGE = 2


def run_main(body: Callable[[], int], debug: bool = False, respell: Optional[Callable[[str], str]] = None) -> int:
    """Run ``body`` and turn its errors into a one-line message on stderr and an exit code.

    Messages name options by their CLI flags; ``respell`` (``dataflow.core.flags.flag_respeller``) rewrites them
    as the interface that runs ``body`` spells them (a seed script's ``--skip_malformed_lines``).
    """
    respell = respell or (lambda message: message)
    try:
        return body()
    except RunInterrupted as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # a second signal during a run (StoppedAtOnce), or Ctrl-C outside one
        print("stopped at once; rows checkpointed so far are kept. Run the same command again to resume.",
              file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)
    except DataflowError as exc:
        if debug:
            raise
        print(f"error: {respell(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # the run itself broke: say what, keep the traceback for --debug
        if debug:
            raise
        print(f"error: the run failed ({type(exc).__name__}: {respell(str(exc))}); finished rows are checkpointed. "
              "Rerun with --debug for a traceback.", file=sys.stderr)
        return EXIT_ROWS_FAILED
