"""Whole answers of the read API, kept per warehouse file so a repeated request skips the app.

Dashboards and integrators poll the same few URLs; parsing and validating a request's
parameters and routing it cost more than the cached query under it. So a successful answer
whose rows came from the warehouse reader's cache (a snapshot table of the file served now,
see opslake.api.warehouse) is kept whole, keyed by the URL and by everything about the caller
that can change the answer: role, scopes, departments and businesses (row scoping happens in
the statement, so two callers alike in these get the same rows). The audit middleware serves a
hit after authenticating the caller and checking its quota, and audits it like any request;
a rebuild that swaps the warehouse file empties the cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from opslake.api.warehouse import WarehouseReader
from opslake.security.roles import Principal

#: Answers kept, and their bytes at most.
MAX_ANSWERS = 4096
MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Answer:
    """A kept answer: its body and media type, and what its audit entry says."""

    body: bytes
    media_type: str
    action: str
    params: dict[str, str]
    rows: int


class AnswerCache:
    """Whole answers per (URL, caller's visibility), for the warehouse file served now."""

    def __init__(
        self, reader: WarehouseReader, max_answers: int = MAX_ANSWERS, max_bytes: int = MAX_BYTES
    ) -> None:
        self.reader = reader
        self.max_answers = max_answers
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._answers: OrderedDict[tuple, Answer] = OrderedDict()
        self._generation: tuple[int, int] | None = None
        self._held = 0
        self.hits = 0

    @staticmethod
    def key(principal: Principal, path: str, query: bytes) -> tuple:
        """What an answer depends on: the URL and the caller's role, scopes and rows."""
        return (
            path,
            query,
            principal.role,
            principal.scopes,
            principal.departments,
            principal.businesses,
        )

    def get(self, key: tuple) -> Answer | None:
        """The kept answer for ``key`` from the file served now, if any."""
        generation = self.reader.generation()
        with self._lock:
            if generation != self._generation:
                self._reset(generation)
                return None
            answer = self._answers.get(key)
            if answer is not None:
                self._answers.move_to_end(key)
                self.hits += 1
            return answer

    def put(self, key: tuple, generation: tuple[int, int] | None, answer: Answer) -> None:
        """Keep ``answer``, made while ``generation`` was served (dropped if it no longer is)."""
        if generation is None or len(answer.body) > self.max_bytes // 8:
            return
        with self._lock:
            if generation != self._generation:
                if generation != self.reader.generation():
                    return
                self._reset(generation)
            if key in self._answers:
                return
            self._answers[key] = answer
            self._held += len(answer.body)
            while len(self._answers) > self.max_answers or self._held > self.max_bytes:
                _, old = self._answers.popitem(last=False)
                self._held -= len(old.body)

    def _reset(self, generation: tuple[int, int] | None) -> None:
        self._answers.clear()
        self._held = 0
        self._generation = generation
