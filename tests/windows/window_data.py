"""Data generators shared by the window property tests (``test_windows_pandas.py``, ``test_windows_parity.py``).

Generated entries carry event times made by ``Clocks``: a clock moves on by
``step`` and each entry lags ``behind`` it, so ties and out-of-order
entries (within the grace, or late) come up as often as the strategies ask.
"""

from __future__ import annotations

from typing import Dict, Hashable, Optional

from streammachine.windows import CythonWindowState, PythonWindowState

BASE = 1_700_000_000_000
CORES = [PythonWindowState] + ([CythonWindowState] if CythonWindowState is not None else [])


class Clocks:
    """Event times: one clock per key (``per_key=True``) or one for all, starting at ``start``;
    ``floor`` (if any) is the earliest time handed out."""

    def __init__(self, *, per_key: bool, start: int = 0, floor: Optional[int] = None) -> None:
        self.per_key, self.start, self.floor = per_key, start, floor
        self.now = start  # the shared clock
        self._clocks: Dict[Hashable, int] = {}

    def time(self, key: Hashable, step: int, behind: int) -> int:
        """Move ``key``'s clock (or the shared one) on by ``step``; an entry ``behind`` ms behind it."""
        if self.per_key:
            clock = self._clocks[key] = self._clocks.get(key, self.start) + step
        else:
            clock = self.now = self.now + step
        at = clock - behind
        return at if self.floor is None else max(self.floor, at)
