"""The ``ohlc_*`` tools: named FastOHLC aggregators held in the MCP server process (scratch: Redis is untouched).

Inputs are finite and bounded (|price|, volume <= 1e18), so no sum of
them overflows and every candle stays valid JSON for the output schema;
times are epoch milliseconds, and a value that looks like seconds is refused.
"""

import time
from typing import Annotated, Any, List, Optional, Sequence

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from streammachine.mcp.arguments import Cursor, check_ms
from streammachine.mcp.limits import cost, fit
from streammachine.mcp.models import Candles, OhlcCreated, OhlcList, OhlcStats, OhlcUpdated
from streammachine.mcp.tooling import ADD, OVERWRITE, READ, hints

MAX_AGGREGATORS = 100
MAX_MAGNITUDE = 1e18
Name = Annotated[str, Field(min_length=1, max_length=256, description="the aggregator's name (from ohlc_create)")]
Symbol = Annotated[str, Field(min_length=1, max_length=256, description="instrument symbol, e.g. 'AAPL'")]
Interval = Annotated[int, Field(gt=0, description="candle length in ms; one of the aggregator's intervals")]
AsOf = Annotated[
    Optional[int],
    Field(ge=0, description="wall-clock epoch ms: candles that ended before it count as complete without newer ticks"),
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


def register(tool, state) -> None:
    aggregators, limits = state.aggregators, state.limits

    def get(name: str):
        try:
            return aggregators[name]
        except KeyError:
            raise ToolError(
                f"no OHLC aggregator named {name!r} (have: {sorted(aggregators)}); create one with ohlc_create"
            ) from None

    def candles_of(name: str, symbol: str, interval_ms: int, method: str, **kwargs: Any) -> List[Any]:
        agg = get(name)
        try:
            return getattr(agg, method)(symbol, interval_ms, **kwargs)
        except ValueError as exc:
            raise ToolError(f"{name}: {exc}") from None

    def page(
        name: str, symbol: str, interval_ms: int, candles: List[Any], limit: int, cursor: Optional[str]
    ) -> Candles:
        if cursor is not None:
            if not cursor.isdigit():
                raise ToolError(
                    f"cursor={cursor!r}: expected the next_cursor of a previous page (a candle start in ms)"
                )
            candles = [c for c in candles if c.candle_start_ms > int(cursor)]
        chosen, cut = fit(candles[:limit], limits.page_budget, lambda c: cost(c.as_dict()))
        more = cut or len(candles) > len(chosen)
        return Candles(
            name=name,
            symbol=symbol,
            interval_ms=interval_ms,
            count=len(chosen),
            candles=chosen,
            next_cursor=str(chosen[-1].candle_start_ms) if more and chosen else None,
            truncated=cut,
        )

    Limit = Annotated[int, Field(ge=1, le=limits.records, description=f"candles per page (1..{limits.records})")]
    default_limit = limits.default_count(1000)

    @tool(
        title="Create an OHLC aggregator",
        example={"name": "market_data", "intervals": [60000, 300000]},
        **hints(destructive=True, idempotent=True),
    )
    async def ohlc_create(
        name: Name,
        intervals: Annotated[
            Sequence[int], Field(min_length=1, max_length=32, description="candle lengths in ms, e.g. 60000 = 1 minute")
        ] = (60000, 300000),
    ) -> OhlcCreated:
        """Create an OHLC (candle) aggregator in this server's memory; replaces one of the same name.

        At most 100 aggregators per server.
        """
        from streammachine.ohlc import create_ohlc_aggregator

        if name not in aggregators and len(aggregators) >= MAX_AGGREGATORS:
            raise ToolError(
                f"this server already holds {MAX_AGGREGATORS} aggregators; remove one with ohlc_clear first"
            )
        try:
            agg: Any = create_ohlc_aggregator(intervals)
        except ValueError as exc:
            raise ToolError(f"ohlc_create: {exc}") from None
        replaced = name in aggregators
        aggregators[name] = agg
        return OhlcCreated(name=name, intervals=list(agg.intervals), replaced=replaced)

    @tool(
        title="Add a tick",
        example={
            "name": "market_data",
            "symbol": "AAPL",
            "price": 150.25,
            "volume": 100,
            "timestamp_ms": 1700000000000,
        },
        **ADD,
    )
    async def ohlc_update(
        name: Name,
        symbol: Symbol,
        price: Annotated[
            float,
            Field(allow_inf_nan=False, ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE, description="trade price (finite)"),
        ],
        volume: Annotated[
            float, Field(allow_inf_nan=False, ge=0, le=MAX_MAGNITUDE, description="trade volume (0..1e18)")
        ] = 0.0,
        timestamp_ms: Annotated[
            Optional[int], Field(ge=0, description="tick time in epoch milliseconds (default: now)")
        ] = None,
    ) -> OhlcUpdated:
        """Update an aggregator with one trade tick; the tick lands in the candle of each interval containing it."""
        agg = get(name)
        check_ms("timestamp_ms", timestamp_ms)
        stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        try:
            agg.update_tick(symbol, price, volume, stamp)
        except ValueError as exc:
            raise ToolError(f"ohlc_update: {exc}") from None
        return OhlcUpdated(name=name, symbol=symbol, timestamp_ms=stamp, tick_count=agg.tick_count)

    @tool(title="Candles", example={"name": "market_data", "symbol": "AAPL", "interval_ms": 60000}, **READ)
    async def ohlc_get_candles(
        name: Name, symbol: Symbol, interval_ms: Interval, limit: Limit = default_limit, cursor: Cursor = None
    ) -> Candles:
        """Candles for a symbol and interval, oldest first (the last may still be forming); paged by `next_cursor`."""
        return page(name, symbol, interval_ms, candles_of(name, symbol, interval_ms, "get_candles"), limit, cursor)

    @tool(title="Completed candles", example={"name": "market_data", "symbol": "AAPL", "interval_ms": 60000}, **READ)
    async def ohlc_get_completed(
        name: Name,
        symbol: Symbol,
        interval_ms: Interval,
        as_of_ms: AsOf = None,
        limit: Limit = default_limit,
        cursor: Cursor = None,
    ) -> Candles:
        """Completed candles, ready to emit: ended at or before the symbol's latest tick, or `as_of_ms`."""
        check_ms("as_of_ms", as_of_ms)
        candles = candles_of(name, symbol, interval_ms, "get_completed_candles", as_of_ms=as_of_ms)
        return page(name, symbol, interval_ms, candles, limit, cursor)

    @tool(
        title="Flush completed candles",
        example={"name": "market_data", "symbol": "AAPL", "interval_ms": 60000},
        **hints(destructive=True),
    )
    async def ohlc_flush(name: Name, symbol: Symbol, interval_ms: Interval, as_of_ms: AsOf = None) -> Candles:
        """Remove the completed candles from memory and return them (`count`: all removed; `truncated`: the
        result limit left some out of `candles`)."""
        check_ms("as_of_ms", as_of_ms)
        removed = candles_of(name, symbol, interval_ms, "flush_interval", as_of_ms=as_of_ms)
        shown, cut = fit(removed, limits.page_budget, lambda c: cost(c.as_dict()))
        return Candles(
            name=name, symbol=symbol, interval_ms=interval_ms, count=len(removed), candles=shown, truncated=cut
        )

    @tool(title="Clear an aggregator", example={"name": "market_data"}, **OVERWRITE)
    async def ohlc_clear(name: Name) -> OhlcStats:
        """Clear all ticks and candles from an aggregator (it keeps its intervals)."""
        agg = get(name)
        agg.clear()
        return _stats(name, agg)

    @tool(title="Aggregator statistics", example={"name": "market_data"}, **READ)
    async def ohlc_stats(name: Name) -> OhlcStats:
        """Aggregator statistics: ticks, late and rejected ticks, symbols, candles held per interval."""
        return _stats(name, get(name))

    @tool(title="List aggregators", example={}, **READ)
    async def ohlc_list() -> OhlcList:
        """List this server's OHLC aggregators with their statistics."""
        return OhlcList(aggregators=[_stats(name, agg) for name, agg in sorted(aggregators.items())])
