import threading
import time

import pytest

from dataflow.io.sources.cache import LoadOnceCache


def test_threads_asking_for_one_key_at_once_share_a_single_load():
    cache, loads, barrier = LoadOnceCache(size=2), [], threading.Barrier(8)

    def load():
        loads.append(1)
        time.sleep(0.05)
        return "index"

    results = []

    def ask():
        barrier.wait()
        results.append(cache.get("shard.tar", load))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["index"] * 8 and len(loads) == 1


def test_the_least_recently_used_key_leaves_and_a_failed_load_is_tried_again():
    cache, loads = LoadOnceCache(size=2), []
    get = lambda key: cache.get(key, lambda: loads.append(key) or key.upper())  # noqa: E731
    assert [get("a"), get("b"), get("a"), get("c")] == ["A", "B", "A", "C"]
    get("a")
    get("b")  # evicted by "c": loaded again
    assert loads == ["a", "b", "c", "b"]
    with pytest.raises(OSError):
        cache.get("d", lambda: (_ for _ in ()).throw(OSError("disk")))
    assert cache.get("d", lambda: "D") == "D"
