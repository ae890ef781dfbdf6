"""The pure-Python core's records: a window's aggregate state as a flat list, updated, merged, turned into rows.

A record is ``[n, doubles..., times..., custom states...]`` (see
``aggregates.Layout``); the operations run in the same order of float
operations as the compiled core's (``_speedups/_window_records.pxd``).
"""

from __future__ import annotations

import math
from typing import Any, List

from streammachine.windows.aggregates import (
    OP_FIRST,
    OP_LAST,
    OP_MAX,
    OP_MIN,
    OP_PSUM,
    OP_SUM,
    OP_WELFORD,
    R_COUNT,
    R_DIV,
    R_MEAN,
    R_STD,
    R_TIME,
    R_VALUE,
    R_VAR,
)

_NAN = math.nan


class RecordOps:
    """Mixed into ``WindowCore``: needs its ``_blank``, ``_customs``, ``_updates``, ``_results``, ``_out``,
    ``_row_names``."""

    _blank: list
    _customs: Any
    _updates: Any
    _results: Any
    _out: List[tuple]
    _row_names: tuple

    # -- records ---------------------------------------------------------------

    def _new_record(self) -> list:
        record = list(self._blank)
        for custom in self._customs:
            record.append(custom.init())
        return record

    def _update(self, record: list, ts: int, values) -> None:
        count = record[0] + 1
        for op, slot, slot2, field, field2 in self._updates:
            value = values[field]
            if op == OP_SUM:
                record[slot] += value
            elif op == OP_PSUM:
                record[slot] += value * values[field2]
            elif op == OP_MIN:
                if value < record[slot]:
                    record[slot] = value
            elif op == OP_MAX:
                if value > record[slot]:
                    record[slot] = value
            elif op == OP_FIRST:
                if ts < record[slot2]:
                    record[slot2] = ts
                    record[slot] = value
            elif op == OP_LAST:
                if ts >= record[slot2]:
                    record[slot2] = ts
                    record[slot] = value
            elif op == OP_WELFORD:
                delta = value - record[slot]
                record[slot] += delta / count
                record[slot + 1] += delta * (value - record[slot])
            else:
                record[slot] = self._customs[slot2].add(record[slot], value, ts)
        record[0] = count

    def _merge(self, older: list, newer: list) -> list:
        """A new record: ``older`` and ``newer`` combined (ties: first from older, last from newer)."""
        merged = list(older)
        n_old, n_new = older[0], newer[0]
        count = n_old + n_new
        for op, slot, slot2, _field, _field2 in self._updates:
            if op == OP_SUM or op == OP_PSUM:
                merged[slot] = older[slot] + newer[slot]
            elif op == OP_MIN:
                if newer[slot] < older[slot]:
                    merged[slot] = newer[slot]
            elif op == OP_MAX:
                if newer[slot] > older[slot]:
                    merged[slot] = newer[slot]
            elif op == OP_FIRST:
                if newer[slot2] < older[slot2]:
                    merged[slot2], merged[slot] = newer[slot2], newer[slot]
            elif op == OP_LAST:
                if newer[slot2] >= older[slot2]:
                    merged[slot2], merged[slot] = newer[slot2], newer[slot]
            elif op == OP_WELFORD:
                if n_new == 0:
                    continue
                if n_old == 0:
                    merged[slot], merged[slot + 1] = newer[slot], newer[slot + 1]
                    continue
                delta = newer[slot] - older[slot]
                merged[slot] = older[slot] + delta * n_new / count
                merged[slot + 1] = older[slot + 1] + newer[slot + 1] + delta * delta * n_old * n_new / count
            else:
                merged[slot] = self._customs[slot2].merge(older[slot], newer[slot])
        merged[0] = count
        return merged

    def _emit(self, key: Any, start: int, end: int, record: list) -> None:
        row: List[Any] = [key.name, start, end]
        count = record[0]
        for op, slot, arg in self._results:
            if op == R_COUNT:
                row.append(count)
            elif op == R_VALUE or op == R_TIME:
                row.append(record[slot])
            elif op == R_DIV:
                row.append(record[slot] / record[arg] if record[arg] != 0.0 else _NAN)
            elif op == R_MEAN:
                row.append(record[slot] / count)
            elif op == R_VAR or op == R_STD:
                var = record[slot + 1] / (count - arg) if count > arg else _NAN
                row.append(math.sqrt(var) if op == R_STD and var == var else var)
            else:
                row.append(self._customs[arg].result(record[slot]))
        self._out.append(tuple(row))

    def _take_rows(self) -> list:
        out = self._out
        if not out:
            return []
        self._out = []
        names = self._row_names
        return [dict(zip(names, row)) for row in out]

    def _take_raw(self) -> list:
        out, self._out = self._out, []
        return out
