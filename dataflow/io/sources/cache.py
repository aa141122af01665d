"""A small least-recently-used cache that loads each key once, however many threads ask for it at the same time.

The planner probes a shard's rows from several threads at once; with ``functools.lru_cache`` each of them would
read the same tar index or row group itself. Here the first caller loads and the others wait for its result.
``shard_version`` keys what was read from a shard, so that a rewritten shard is read again.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable

from dataflow.core.errors import RowError
from dataflow.core.reference import SourceRef


class LoadOnceCache:
    """``get(key, load)``: the cached value of ``key``, or ``load()``'s, computed by one caller at a time.

    Args:
        size: how many values are kept; the least recently used leaves first.
    """

    def __init__(self, size: int):
        self.size = size
        self._values: OrderedDict = OrderedDict()
        self._loading: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._values:  # loaded by the caller this one waited for
                    return self._values[key]
            value = load()  # an exception leaves nothing cached: the next caller tries again
            with self._lock:
                self._values[key] = value
                while len(self._values) > self.size:
                    self._values.popitem(last=False)
                self._loading.pop(key, None)
            return value


def shard_version(ref: SourceRef) -> tuple:
    """(mtime, size) of the reference's shard, which keys the caches of what was read from it; ``RowError`` when
    the shard cannot be opened."""
    try:
        info = os.stat(ref.container)
    except OSError as exc:
        raise RowError(f"{ref}: cannot open its shard {ref.container}: {exc.strerror or exc}") from None
    return info.st_mtime_ns, info.st_size
