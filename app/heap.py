"""Keep Python's cyclic garbage collector off the request path.

Everything loaded at start-up (Litestar's routes and OpenAPI schemas, the
MCP and tokenizer libraries, the providers) is about 150,000 tracked objects
that live as long as the process. With the interpreter's default thresholds
(700 allocations per young collection) a proxied request at concurrency 64
triggered a young collection every request or two, each walking the objects
of the 64 requests in flight, and those survivors soon forced full
collections over all 150,000 objects. Measured on the 2-core machine (5 s of
non-streamed load, default configuration): the collector took 1.4 s, about
0.33 ms per request, more than all of toolrelay's own work; its 0.1-0.3 s full
collections were the p99 latency. After :func:`settle_after_startup` it took
26 ms in total (2.4 us per request) and throughput rose 2.5x.

Freezing moves the start-up objects out of every later collection (they are
never garbage); the larger young threshold lets a request's objects die by
reference counting before a collection ever looks at them. Cyclic garbage is
still collected, only in batches of 10,000 allocations instead of 700.

The request paths themselves make none (tests/proxy/test_proxy_garbage.py): a
young collection here walks 9,000-17,000 objects in 3-7 ms, a pause every
stream in flight waits out. When each stream left a 20-object cycle (a
cancelled disconnect watcher) they came every 0.4 s at concurrency 64, with a
15-27 ms older collection every ten; without it, once in 7 s.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "settle_after_startup"]

#: Net allocations between young collections (the interpreter's default is 700).
YOUNG_THRESHOLD = 10_000


async def settle_after_startup() -> None:
    """Collect once, freeze what start-up made, and widen the young generation's threshold.

    A start-up hook of the serving process (``toolrelay serve``, each worker of
    ``--workers N``), registered last; not of :func:`create_app` itself, which
    tests call many times in one process.
    """
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    if young:  # 0 means the operator disabled the collector: leave it so
        gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)
