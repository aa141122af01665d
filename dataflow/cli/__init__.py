"""The ``dataflow-edit`` command line.

Importing the command (pandas, Pillow, the engines) takes a moment; Ctrl-C meanwhile stops it with one line and
exit code 130 instead of a ``KeyboardInterrupt`` traceback from deep inside an import. Once imported, the
command's own handling (``dataflow.cli.exits.run_main``) takes over.
"""

import signal as _signal
import sys as _sys
import threading as _threading


def _stop_while_importing(signum, frame):
    print("stopped before the run started; nothing was done", file=_sys.stderr)
    raise SystemExit(128 + signum)


_quiet = (_threading.current_thread() is _threading.main_thread()
          and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler)
if _quiet:
    _signal.signal(_signal.SIGINT, _stop_while_importing)
try:
    from dataflow.cli.main import main
finally:
    if _quiet:
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)

__all__ = ["main"]
