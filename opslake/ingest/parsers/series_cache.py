"""Values computed once per distinct key and process, found again with no Python per key.

Both Prometheus parsers see the same series over and over: exposition text repeats
``name{labels}`` in every scrape, remote write the same encoded label block in every
request. Each distinct key is worked out in Python once (``compute``); after that a key is
found by its polars hash in an open-addressing table probed in numpy rounds (all keys of a
lookup at once) and confirmed by comparing the key itself, so a hash collision costs a
probe, never a wrong row. Past ``limit`` keys the cache starts over, which bounds its memory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa


class SeriesCache:
    """Computed values per key (a polars frame of ``schema``), found by hash, confirmed by key."""

    def __init__(
        self,
        compute: Callable[[list[Any]], list[tuple[Any, ...]]],
        key: pl.DataType,
        schema: dict[str, pl.DataType],
        *,
        limit: int = 500_000,
    ) -> None:
        self._compute, self._key, self._schema, self.limit = compute, key, schema, limit
        self._lock = threading.Lock()  # parsers run in worker threads of one process
        self._clear()

    def _clear(self) -> None:
        self._slots = np.full(1024, -1, np.int64)  # the row in each slot, -1 where empty
        self._slot_hash = np.zeros(1024, np.uint64)  # the hash of that row, beside it
        self._hashes = np.empty(0, np.uint64)  # the hash of each row, to grow the table
        self._keys = pl.Series(dtype=self._key)
        self._values = pl.DataFrame(schema=self._schema)
        self._arrow: tuple[pl.DataFrame, pa.Table] | None = None  # see arrow()

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, keys: pl.Series) -> pl.DataFrame:
        """The computed columns for ``keys`` (no nulls), row for row; new keys are kept."""
        rows, values = self.rows(keys)
        return values[rows.astype(np.uint32)]

    def arrow(self, values: pl.DataFrame) -> pa.Table:
        """``values`` (a frame :meth:`rows` or :meth:`find` answered) as one Arrow table of
        plain strings, converted once per change of the cache, so rows are taken from it
        without converting them at every lookup."""
        with self._lock:
            if self._arrow is not None and self._arrow[0] is values:
                return self._arrow[1]
        table = values.to_arrow(compat_level=pl.CompatLevel.newest())
        table = table.cast(
            pa.schema(
                [
                    (f.name, pa.string() if pa.types.is_string_view(f.type) else f.type)
                    for f in table.schema
                ]
            )
        ).combine_chunks()
        with self._lock:
            if values is self._values:
                self._arrow = (values, table)
        return table

    def find(self, keys: pl.Series) -> tuple[np.ndarray, pl.DataFrame]:
        """The row of each key (-1 where not cached) and the values those rows index."""
        hashes = self._hash(keys)
        with self._lock:
            return self._find(keys, hashes), self._values

    def rows(self, keys: pl.Series) -> tuple[np.ndarray, pl.DataFrame]:
        """The row of each key, new keys computed and kept, and the values they index.

        The frame is the cache's as of this call: a later call that starts over does not
        change it, so the rows stay valid for it.
        """
        hashes = self._hash(keys)
        with self._lock:
            rows = self._find(keys, hashes)
            missing = rows < 0
            if missing.any():
                first = keys.is_first_distinct().to_numpy()
                new = first & missing
                restart = len(self._keys) + int(new.sum()) > self.limit
                if restart:  # starting over keeps every key of this lookup, not only the new
                    new = first
                self._add(keys.filter(pl.Series(new)), hashes[new], restart=restart)
                rows = self._find(keys, hashes)
            return rows, self._values

    @staticmethod
    def _hash(keys: pl.Series) -> np.ndarray:
        # A frame's row hash is one call into polars; Series.hash goes through the
        # expression engine, which costs more than hashing a request's keys.
        return keys.to_frame().hash_rows(seed=0).to_numpy()

    def _find(self, keys: pl.Series, hashes: np.ndarray) -> np.ndarray:
        """The row of each key, -1 where it is not cached."""
        slots, slot_hash, mask = self._slots, self._slot_hash, len(self._slots) - 1
        rows = np.full(len(keys), -1, np.int64)
        todo = np.arange(len(keys) if len(self._keys) else 0)
        at = self._home(hashes)
        while todo.size:  # a second pass only for keys whose hash another key has too
            # Probe by hash alone (numpy rounds) to the first slot holding the same hash...
            candidate = np.full(len(keys), -1, np.int64)
            probing = todo
            while probing.size:
                held = slots[at[probing]]
                same = (held >= 0) & (slot_hash[at[probing]] == hashes[probing])
                candidate[probing[same]] = held[same]
                probing = probing[(held >= 0) & ~same]  # an empty slot ends the probe
                at[probing] = (at[probing] + 1) & mask
            # ...then compare the keys themselves, once for all keys. (Series are indexed
            # with uint32 numpy arrays: gather() costs a trip through the expression
            # engine, and other index types a conversion.)
            todo = todo[candidate[todo] >= 0]
            if not todo.size:
                break
            asked = keys if todo.size == len(keys) else keys[todo.astype(np.uint32)]
            match = (self._keys[candidate[todo].astype(np.uint32)] == asked).to_numpy()
            rows[todo[match]] = candidate[todo[match]]
            todo = todo[~match]
            at[todo] = (at[todo] + 1) & mask
        return rows

    def _home(self, hashes: np.ndarray) -> np.ndarray:
        """The first slot each hash probes: its top bits."""
        return (hashes >> np.uint64(65 - len(self._slots).bit_length())).astype(np.int64)

    def _add(self, new: pl.Series, hashes: np.ndarray, *, restart: bool) -> None:
        # Computed before anything changes: a key that raises leaves the cache as it was.
        added = pl.DataFrame(self._compute(new.to_list()), schema=self._schema, orient="row")
        if restart:
            self._clear()
        first = len(self._keys)
        self._keys = pl.concat([self._keys, new], rechunk=False)
        self._values = pl.concat([self._values, added], rechunk=False)
        if self._keys.n_chunks() > 32:  # gathers slow down over many chunks
            self._keys, self._values = self._keys.rechunk(), self._values.rechunk()
        self._hashes = np.concatenate([self._hashes, hashes])
        if 2 * len(self._hashes) > len(self._slots):  # at most half full: probes stay short
            size = 1 << (4 * len(self._hashes)).bit_length()
            self._slots = np.full(size, -1, np.int64)
            self._slot_hash = np.zeros(size, np.uint64)
            first = 0
        self._insert(np.arange(first, len(self._hashes)))

    def _insert(self, rows: np.ndarray) -> None:
        """Put ``rows`` in their slots by linear probing, in numpy rounds.

        Each round, every row whose slot is empty and that comes first for it takes it; the
        others move one slot on. A row thus sits after a run of filled slots from its home,
        which is what :meth:`_find` walks.
        """
        slots, slot_hash, mask = self._slots, self._slot_hash, len(self._slots) - 1
        hashes = self._hashes[rows]
        at = self._home(hashes)
        while rows.size:
            free = np.flatnonzero(slots[at] < 0)
            _, first = np.unique(at[free], return_index=True)
            won = free[first]
            slots[at[won]], slot_hash[at[won]] = rows[won], hashes[won]
            left = np.ones(rows.size, bool)
            left[won] = False
            rows, hashes, at = rows[left], hashes[left], (at[left] + 1) & mask
