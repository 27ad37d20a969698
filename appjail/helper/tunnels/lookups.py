"""Host name lookups, all at once, with one deadline: getaddrinfo has no timeout of its own.

A WireGuard file may name up to 16 endpoints; each name is looked up in a
daemon thread of its own and the caller waits for all of them, at most
`timeout` seconds. A lookup that does not answer in time is not waited
for: its thread stays until the resolver gives up (resolv.conf's timeout
and attempts), so `max_pending` bounds how many may be outstanding at once,
and a user sending slow names again and again cannot pile up threads in the helper.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Sequence

log = logging.getLogger(__name__)

TIMEOUT = 5.0  # s for all of a request's names together
MAX_PENDING = 64

Query = tuple[str, int]  # (host, port)


class LookupsBusy(RuntimeError):
    """Too many lookups are outstanding already; the message is meant for the user."""


class NameLookups:
    def __init__(self, resolve: Callable[[str, int], Sequence[str]], timeout: float = TIMEOUT,
                 max_pending: int = MAX_PENDING) -> None:
        """resolve(host, port): its addresses, first preferred (none: the name does not resolve)."""
        self.resolve = resolve
        self.timeout = timeout
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._pending = 0

    def resolve_all(self, queries: Collection[Query]) -> dict[Query, list[str] | None]:
        """Each query's addresses; None for one that did not answer within the timeout."""
        queries = list(dict.fromkeys(queries))
        with self._lock:
            if self._pending + len(queries) > self.max_pending:
                raise LookupsBusy(f"{self._pending} host name lookups are still waiting for an answer: "
                                  "try again in a moment")
            self._pending += len(queries)
        answers: dict[Query, list[str]] = {}
        answered = threading.Condition()

        def look_up(query: Query) -> None:
            try:
                found = list(self.resolve(*query))
            except Exception:  # noqa: BLE001 - a failed lookup is a name that does not resolve
                log.exception("looking up %s failed", query[0])
                found = []
            with self._lock:
                self._pending -= 1
            with answered:
                answers[query] = found
                answered.notify()

        for query in queries:
            threading.Thread(target=look_up, args=(query,), name="lookup", daemon=True).start()
        with answered:
            answered.wait_for(lambda: len(answers) == len(queries), self.timeout)
            return {query: answers.get(query) for query in queries}
