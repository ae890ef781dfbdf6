"""FastOHLC: an OHLC core (compiled or pure Python) plus the read API both share.

Semantics, identical in both cores:

- Candles are aligned to the epoch: a tick at ``ts`` belongs to the candle
  starting at ``ts - ts % interval``.
- ``open`` is the earliest tick by timestamp and ``close`` the latest (not by
  arrival); ties go by arrival order (first arrival opens, last closes).
- The clock is data time: a candle is complete once it ended at or before
  the symbol's latest tick (``start + interval <= latest``), so a replay of
  history completes the same candles the live run did. For a quiet symbol
  (no later tick comes) pass a wall clock: ``as_of_ms`` moves the horizon
  forward to it (never back). Upstream's positional ``before_timestamp`` is
  an explicit horizon instead: exactly the candles that ended at or before
  it, whatever the latest tick.
- ``flush_interval`` removes the completed candles and seals that time: a
  later tick for it counts in ``late_ticks`` and is dropped for that
  interval, so a flushed candle is never emitted twice.
- Invalid input: ``update_tick`` raises ValueError naming the field; the
  batch paths skip such rows and count them in ``rejected``.
- ``snapshot()`` is the whole state as plain JSON-able data, the same for
  both cores; ``restore(snapshot)`` / ``FastOHLC.from_snapshot(snapshot)``
  take it back (see ``snapshot.py`` for the format).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Type, TypeVar

from streammachine._speedups import load_compiled
from streammachine.ohlc import snapshot as _snapshot
from streammachine.ohlc._core_py import OHLCCore as _PythonCore
from streammachine.ohlc.candle import Candle
from streammachine.ohlc.ticks import completion_cut

_Aggregator = TypeVar("_Aggregator", bound="OHLCMethods")


class OHLCMethods:
    """The read side, written once over a core's ``_rows``/``_flush``/``latest_timestamp``.

    It is also the type of every FastOHLC: the core members below are
    declared for the type checker only (at run time they come from the
    compiled or the Python core this class is mixed with).
    """

    __slots__ = ()

    if TYPE_CHECKING:
        compiled: bool

        def __init__(self, intervals: Any = None) -> None: ...
        def clear(self) -> None: ...
        @property
        def intervals(self) -> Tuple[int, ...]: ...
        @property
        def tick_count(self) -> int: ...
        @property
        def late_ticks(self) -> int: ...
        @property
        def rejected(self) -> int: ...
        @property
        def symbols(self) -> List[str]: ...
        def latest_timestamp(self, symbol: Any) -> Optional[int]: ...
        def update_tick(self, symbol: Any, price: Any, volume: Any, timestamp_ms: Any) -> None: ...
        def process_stream_batch(
            self, entries: Any, price_field: str = ..., volume_field: str = ..., symbol_field: str = ...
        ) -> int: ...
        def update_arrays(self, symbols: Any, prices: Any, volumes: Any, timestamps_ms: Any) -> int: ...
        def _rows(self, symbol: Any, index: int, before: Optional[int]) -> list: ...
        def _flush(self, symbol: Any, index: int, before: int) -> list: ...
        def _export(self) -> list: ...
        def _load(self, symbols: list, ticks: int, late: int, rejected: int) -> None: ...

    def get_candles(self, symbol: Any, interval: int) -> List[Candle]:
        """Every candle held for ``symbol`` and ``interval``, oldest first (the last may be in progress)."""
        return [Candle(*row) for row in self._rows(symbol, self._interval_index(interval), None)]

    def get_completed_candles(
        self,
        symbol: Any,
        interval: int,
        before_timestamp: Optional[int] = None,
        *,
        as_of_ms: Optional[int] = None,
    ) -> List[Candle]:
        """The candles that are complete (ready to emit), oldest first; the clock is in the module docstring."""
        index, cut = self._completion(symbol, interval, as_of_ms, before_timestamp)
        return [] if cut is None else [Candle(*row) for row in self._rows(symbol, index, cut)]

    def flush_interval(
        self,
        symbol: Any,
        interval: int,
        before_timestamp: Optional[int] = None,
        *,
        as_of_ms: Optional[int] = None,
    ) -> List[Candle]:
        """Remove the completed candles (and seal their time); returns them, oldest first."""
        index, cut = self._completion(symbol, interval, as_of_ms, before_timestamp)
        return [] if cut is None else [Candle(*row) for row in self._flush(symbol, index, cut)]

    def get_candles_as_dicts(self, symbol: Any, interval: int) -> List[Dict[str, Any]]:
        return [candle.as_dict() for candle in self.get_candles(symbol, interval)]

    def snapshot(self) -> Dict[str, Any]:
        """The whole state (candles held, latest times, flush points, counters) as plain JSON-able data."""
        return _snapshot.build(self)

    def restore(self, snapshot: Any) -> None:
        """Replace the whole state with ``snapshot`` (a dict or its JSON), from either implementation.

        The snapshot's intervals must be this aggregator's; a bad snapshot
        raises ValueError and leaves the state as it was.
        """
        self._load(*_snapshot.parse(snapshot, self.intervals))

    @classmethod
    def from_snapshot(cls: Type[_Aggregator], snapshot: Any) -> _Aggregator:
        """A new aggregator (of this class) holding ``snapshot``'s state, with its intervals."""
        if isinstance(snapshot, (str, bytes, bytearray, memoryview)):
            snapshot = _snapshot.parse_json(snapshot)
        intervals = snapshot.get("intervals") if isinstance(snapshot, dict) else None
        aggregator = cls(intervals)
        aggregator.restore(snapshot)
        return aggregator

    def stats(self) -> Dict[str, Any]:
        return {
            "implementation": "cython" if self.compiled else "python",
            "intervals": list(self.intervals),
            "symbols": len(self.symbols),
            "tick_count": self.tick_count,
            "late_ticks": self.late_ticks,
            "rejected": self.rejected,
        }

    def _completion(self, symbol: Any, interval: Any, as_of_ms: Any, before_timestamp: Any = None):
        """(interval index, start before which candles are complete or None)."""
        index = self._interval_index(interval)
        latest = self.latest_timestamp(symbol)
        return index, completion_cut(latest, self.intervals[index], as_of_ms, before_timestamp)

    def _interval_index(self, interval: Any) -> int:
        try:
            return self.intervals.index(interval)
        except ValueError:
            raise ValueError(
                f"interval {interval!r}: not one of this aggregator's intervals {list(self.intervals)}"
            ) from None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(intervals={list(self.intervals)}, symbols={len(self.symbols)}, "
            f"tick_count={self.tick_count})"
        )


class PythonFastOHLC(_PythonCore, OHLCMethods):
    """FastOHLC on the pure-Python core (numpy-vectorised)."""

    __slots__ = ()
    compiled = False


CythonFastOHLC: Optional[Type[OHLCMethods]]
_compiled = load_compiled("_ohlc")
if _compiled is None:  # not built, or out of date: the Python core serves
    CythonFastOHLC = None
else:
    _CompiledCore: Any = _compiled.OHLCCore

    class CythonFastOHLC(_CompiledCore, OHLCMethods):  # type: ignore[no-redef]  # the class, or None above
        """FastOHLC on the compiled core."""

        __slots__ = ()
        compiled = True


def choose_implementation(pure_python: bool = False) -> Type[OHLCMethods]:
    """The compiled class when built and not declined, else the Python one."""
    if CythonFastOHLC is not None and not pure_python:
        return CythonFastOHLC
    return PythonFastOHLC
