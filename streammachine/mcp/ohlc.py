"""The ``ohlc_*`` tools: named FastOHLC aggregators held in the MCP server process."""

from __future__ import annotations

import time
from typing import Annotated, Any, Callable, List, Optional

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from streammachine.mcp.models import Candles, OhlcCreated, OhlcList, OhlcStats, OhlcUpdated

Name = Annotated[str, Field(min_length=1, description="the aggregator's name (from ohlc_create)")]
Symbol = Annotated[str, Field(min_length=1, description="instrument symbol, e.g. 'AAPL'")]
Interval = Annotated[int, Field(gt=0, description="candle length in ms; one of the aggregator's intervals")]
AsOf = Annotated[
    Optional[int],
    Field(description="wall-clock ms: candles that ended before it count as complete even without newer ticks"),
]


def _stats(name: str, agg: Any) -> OhlcStats:
    raw = agg.stats()
    return OhlcStats(
        name=name,
        implementation=raw["implementation"],
        intervals=list(agg.intervals),
        tick_count=agg.tick_count,
        late_ticks=raw["late_ticks"],
        rejected=raw["rejected"],
        symbols=sorted(agg.symbols),
        candles={
            symbol: {str(i): len(agg.get_candles(symbol, i)) for i in agg.intervals} for symbol in sorted(agg.symbols)
        },
    )


def _candles(name: str, symbol: str, interval_ms: int, candles: List[Any]) -> Candles:
    return Candles(name=name, symbol=symbol, interval_ms=interval_ms, count=len(candles), candles=list(candles))


def register(tool: Callable, state: Any) -> None:
    aggregators = state.aggregators

    def get(name: str):
        try:
            return aggregators[name]
        except KeyError:
            raise ToolError(
                f"no OHLC aggregator named {name!r} (have: {sorted(aggregators)}); create one with ohlc_create"
            ) from None

    @tool
    async def ohlc_create(
        name: Name,
        intervals: Annotated[List[int], Field(min_length=1, description="candle lengths in ms")] = (60000, 300000),
    ) -> OhlcCreated:
        """Create an OHLC aggregator for candle aggregation (replaces one of the same name)."""
        from streammachine.ohlc import create_ohlc_aggregator

        try:
            agg = create_ohlc_aggregator(intervals)
        except ValueError as exc:
            raise ToolError(f"ohlc_create: {exc}") from None
        replaced = name in aggregators
        aggregators[name] = agg
        return OhlcCreated(name=name, intervals=list(agg.intervals), replaced=replaced)

    @tool
    async def ohlc_update(
        name: Name,
        symbol: Symbol,
        price: Annotated[float, Field(description="trade price")],
        volume: Annotated[float, Field(ge=0, description="trade volume")] = 0.0,
        timestamp_ms: Annotated[Optional[int], Field(description="tick time in epoch ms (default: now)")] = None,
    ) -> OhlcUpdated:
        """Update an aggregator with a new tick (trade data)."""
        agg = get(name)
        stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        try:
            agg.update_tick(symbol, price, volume, stamp)
        except ValueError as exc:
            raise ToolError(f"ohlc_update: {exc}") from None
        return OhlcUpdated(name=name, symbol=symbol, timestamp_ms=stamp, tick_count=agg.tick_count)

    def candles_of(name: str, symbol: str, interval_ms: int, method: str, **kwargs: Any) -> Candles:
        agg = get(name)
        try:
            return _candles(name, symbol, interval_ms, getattr(agg, method)(symbol, interval_ms, **kwargs))
        except ValueError as exc:
            raise ToolError(f"{name}: {exc}") from None

    @tool
    async def ohlc_get_candles(name: Name, symbol: Symbol, interval_ms: Interval) -> Candles:
        """Get all candles for a symbol and interval, oldest first (the last may still be forming)."""
        return candles_of(name, symbol, interval_ms, "get_candles")

    @tool
    async def ohlc_get_completed(name: Name, symbol: Symbol, interval_ms: Interval, as_of_ms: AsOf = None) -> Candles:
        """Get completed candles ready to emit (ended at or before the symbol's latest tick, or `as_of_ms`)."""
        return candles_of(name, symbol, interval_ms, "get_completed_candles", as_of_ms=as_of_ms)

    @tool
    async def ohlc_flush(name: Name, symbol: Symbol, interval_ms: Interval, as_of_ms: AsOf = None) -> Candles:
        """Remove completed candles from memory; returns the candles removed."""
        return candles_of(name, symbol, interval_ms, "flush_interval", as_of_ms=as_of_ms)

    @tool
    async def ohlc_clear(name: Name) -> OhlcStats:
        """Clear all data from an aggregator (it keeps its intervals)."""
        agg = get(name)
        agg.clear()
        return _stats(name, agg)

    @tool
    async def ohlc_stats(name: Name) -> OhlcStats:
        """Get aggregator statistics: ticks, symbols, candles held per interval."""
        return _stats(name, get(name))

    @tool
    async def ohlc_list() -> OhlcList:
        """List all OHLC aggregators with their statistics."""
        return OhlcList(aggregators=[_stats(name, agg) for name, agg in sorted(aggregators.items())])
