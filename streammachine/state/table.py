"""Keyed state committed with the ack: ``app.table(name)``.

A ``Table`` is a dict-like view of a Redis hash, kept in memory. Inside a
stage's handler (an agent declaring ``tables=[...]``) reads and writes go
through the running unit (``engine/effects.py``): writes are held until the
consumer commits them, in one atomic step with the outputs and the XACK of
the entries that caused them. Outside a handler a table is read-only.

Every key carries a version. The commit checks that each key a read used
still has the version it saw (optimistic concurrency): another consumer,
process or host that changed it in between makes the commit fail as a whole,
the keys are refreshed, and the read is handled again. So several consumers
and processes may share a table and still count each entry exactly once.

Stored form, one hash field per key: ``<version>|<expires_ms or empty>|<JSON>``;
an empty JSON part is a deleted key (a tombstone keeps versions rising).
"""

from __future__ import annotations

import time
from typing import Any, Dict, Iterator, Optional, Tuple

import orjson

from streammachine._validate import check_positive
from streammachine.engine.effects import DELETED, current_unit

KEY_PREFIX = "streammachine:table:"
_IMMUTABLE = (int, float, str, bool, type(None))
_MISSING: Any = object()  # no default: a missing key raises KeyError

# key -> (version, value, stored JSON, expires at ms or 0); a deleted key keeps its version and expires at 1
Committed = Tuple[int, Any, bytes, int]


def parse_stored(raw: bytes) -> Tuple[int, Optional[bytes], int]:
    """(version, JSON or None for a deleted key, expires_ms or 0) of a stored field."""
    version, _, rest = raw.partition(b"|")
    expires, _, body = rest.partition(b"|")
    return int(version), (body or None), int(expires or 0)


class Table:
    """A dict-like table of JSON values, changed by stages and committed with their acks.

    ``default``: a value or a zero-argument callable (``int``, ``list``)
    returned for missing keys, so ``table[k] += 1`` works. ``ttl``: seconds a
    key lives after its last write (expired keys read as missing).
    """

    def __init__(
        self, name: str, *, default: Any = _MISSING, ttl: Optional[float] = None, key: Optional[str] = None
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"table name {name!r}: expected a non-empty str")
        check_positive(f"table {name!r}: ttl", ttl, optional=True, expected="seconds > 0")
        self.name = name
        self.key = key or f"{KEY_PREFIX}{name}"
        self.default = default
        self.ttl_ms = None if ttl is None else int(ttl * 1000)
        self._committed: Dict[str, Committed] = {}
        self.loaded = False
        self.revision = 0  # bumped by every change of the committed state: a cheap "changed?" for live views

    # -- committed state (what Redis holds, as far as this process knows) -----

    def committed_version(self, key: str) -> int:
        entry = self._committed.get(key)
        return 0 if entry is None else entry[0]

    def committed_get(self, key: str, copy: bool = True) -> Tuple[bool, Any]:
        entry = self._committed.get(key)
        if entry is None or (entry[3] and entry[3] <= time.time() * 1000):
            return False, None
        value = entry[1]
        # hand out a copy of a mutable value: changing it in place must not change committed state
        return True, (value if not copy or isinstance(value, _IMMUTABLE) else orjson.loads(entry[2]))

    def apply_stored(self, key: str, raw: Optional[bytes]) -> None:
        """Take ``raw`` (a stored field, None when absent) as the committed state of ``key``."""
        self.revision += 1
        if raw is None:
            self._committed.pop(key, None)
            return
        version, body, expires = parse_stored(raw)
        if body is None:  # a tombstone: absent, but its version counts
            self._committed[key] = (version, None, b"null", 1)
        else:
            self._committed[key] = (version, orjson.loads(body), body, expires)

    def apply_committed(self, key: str, version: int, value: Any, encoded: Optional[bytes]) -> None:
        """A commit that wrote ``key`` (``encoded``: what ``encode`` made of the value) succeeded with ``version``.

        Its reply may come late (with the next read): a newer version known meanwhile (another consumer's
        commit, a refresh) stays.
        """
        if self.committed_version(key) > version:
            return
        self.revision += 1
        if value is DELETED or encoded is None:
            self._committed[key] = (version, None, b"null", 1)
        else:
            expires, _, body = encoded.partition(b"|")
            self._committed[key] = (version, value, body, int(expires or 0))

    async def load(self, client: Any) -> None:
        """Read the whole table from Redis (HSCAN), replacing what is in memory."""
        fresh: Dict[str, Committed] = {}
        self._committed = fresh
        self.revision += 1
        async for field, raw in client.hscan_iter(self.key, count=1000):
            self.apply_stored(field.decode() if isinstance(field, bytes) else field, raw)
        self.loaded = True

    def encode(self, key: str, value: Any) -> bytes:
        """The stored payload after the version: ``<expires>|<JSON>``; a clear error for what JSON cannot hold."""
        try:
            body = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
        except TypeError as exc:
            raise TypeError(
                f"table {self.name!r}, key {key!r}: value {value!r:.80} is not JSON-serialisable ({exc}); "
                "tables hold numbers, strings, bools, None, lists and dicts"
            ) from None
        expires = b"" if not self.ttl_ms else str(int(time.time() * 1000) + self.ttl_ms).encode()
        return expires + b"|" + body

    # -- the mapping ---------------------------------------------------------

    def _check_key(self, key: Any) -> str:
        if type(key) is not str:
            raise TypeError(f"table {self.name!r}: key {key!r} is a {type(key).__name__}, expected str")
        return key

    def _unit(self) -> Any:
        """The running unit of a stage that declared this table, else None (a plain read of committed state)."""
        unit = current_unit.get()
        return unit if unit is not None and self in unit.effects.tables else None

    def _lookup(self, key: str) -> Tuple[bool, Any]:
        unit = self._unit()
        return self.committed_get(key) if unit is None else unit.read(self, key)

    def _missing(self, key: str) -> Any:
        if self.default is _MISSING:
            raise KeyError(key)
        return self.default() if callable(self.default) else self.default

    def __getitem__(self, key: str) -> Any:
        found, value = self._lookup(self._check_key(key))
        return value if found else self._missing(key)

    def peek(self, key: str, default: Any = None) -> Any:
        """``get`` without the defensive copy of a mutable value: for a caller that will not change it."""
        unit = self._unit()
        key = self._check_key(key)
        found, value = self.committed_get(key, copy=False) if unit is None else unit.read(self, key, copy=False)
        return value if found else default

    def get(self, key: str, default: Any = None) -> Any:
        found, value = self._lookup(self._check_key(key))
        return value if found else default

    def __contains__(self, key: object) -> bool:
        return type(key) is str and self._lookup(key)[0]

    def __setitem__(self, key: str, value: Any) -> None:
        self._writing(self._check_key(key)).write(self, key, value, self.encode(key, value))

    def __delitem__(self, key: str) -> None:
        if not self._lookup(self._check_key(key))[0]:
            raise KeyError(key)
        self._writing(key).write(self, key, DELETED, None)

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        found, value = self._lookup(self._check_key(key))
        if not found:
            if default is _MISSING:
                raise KeyError(key)
            return default
        self._writing(key).write(self, key, DELETED, None)
        return value

    def _writing(self, key: str) -> Any:
        unit = self._unit()
        if unit is None:
            raise RuntimeError(
                f"table {self.name!r}: key {key!r} can only change inside the handler of an agent that declares "
                f"tables=[...{self.name!r}...] (its changes are committed with the ack of the entry)"
            )
        return unit

    def keys(self) -> Iterator[str]:
        """The committed keys (what Redis holds as far as this process knows), without a handler's pending writes."""
        now = time.time() * 1000
        return iter([k for k, e in self._committed.items() if not (e[3] and e[3] <= now)])

    def __iter__(self) -> Iterator[str]:
        return self.keys()

    def __len__(self) -> int:
        return sum(1 for _ in self.keys())

    def items(self) -> Iterator[Tuple[str, Any]]:
        for key in self.keys():
            found, value = self.committed_get(key)
            if found:
                yield key, value

    def values(self) -> Iterator[Any]:
        return (value for _, value in self.items())

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.items())

    def to_dataframe(self) -> Any:
        """The committed table as a pandas DataFrame: one row per key (dict values spread into columns)."""
        import pandas as pd

        rows = self.to_dict()
        if rows and all(isinstance(v, dict) for v in rows.values()):
            return pd.DataFrame.from_dict(rows, orient="index").rename_axis("key")
        return pd.DataFrame({"value": pd.Series(rows, dtype=object)}).rename_axis("key")

    def __repr__(self) -> str:
        return f"Table({self.name!r}, keys={len(self)}, redis_key={self.key!r})"
