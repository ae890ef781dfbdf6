"""Texts the MCP server hands to models: its instructions and its two prompts."""

from __future__ import annotations

INSTRUCTIONS = """\
StreamMachine: stream processing on Redis Streams. Use stream_list / stream_info / stream_read to look at
streams, stream_send / stream_send_batch (all or nothing) to add entries, stream_groups / stream_pending /
stream_dead_letters to see how consumer groups are doing (lag, unacknowledged work, entries that failed too
often; stream_dead_letter_show / _replay / _purge to inspect, send back or delete them), stream_group_read /
stream_group_ack to consume through a group. storage_* tools read and write the
state apps share (Redis storage backend: apps run with STREAMMACHINE_STORAGE=redis). ohlc_* tools aggregate
ticks into OHLC candles in this server's memory. Times and stream ids are epoch milliseconds. Listings are
paged: pass a result's next_cursor as cursor. Destructive tools (stream_trim, stream_group_reset,
stream_group_destroy, stream_dead_letter_replay, stream_dead_letter_purge, storage_clear, obj_delete) need
confirm: true (the JSON boolean) and say what they would
do without it."""

READ_ONLY_NOTE = "\nThis server is read-only: tools that write to Redis are not available."

_GUIDE = {
    "overview": """\
# StreamMachine in five minutes

An App registers *agents* (consumers of a Redis stream, in a consumer group) and *timers* (periodic tasks):

```python
from streammachine import App, Message

app = App(name="demo")

@app.timer(1)
async def produce():
    await app.send("orders", {"item": "book", "qty": 1})

@app.agent("orders", group="billing")
async def bill(record: Message):
    print(record.message["item"], record.timer)

if __name__ == "__main__":
    app.start()          # headless: blocks until Ctrl-C / SIGTERM
```

Run it: `python app.py`, or `streammachine run app.py --workers 4 --metrics-port 9100`.
In Jupyter, `app.start()` returns at once and the agents keep running between cells.
Delivery is at-least-once: an entry is acknowledged after its handler returns; failures are retried and,
after max_deliveries, moved to the dead-letter stream `{stream}:dead`.
With this MCP server: stream_send to feed an agent, stream_info to watch its group's lag and pending,
stream_dead_letters to see what failed and why; once the handler is fixed, stream_dead_letter_replay sends
them back (each exactly once).""",
    "agents": """\
# Agents

`@app.agent(stream, group="eventengine", concurrency=1, processes=None, batch=False, **options)`
- every group gets every entry (fan-out); consumers within a group share the entries (load balancing);
- `concurrency=N`: N consumers in the process; `processes=N`: N worker processes;
- `batch=True`: the handler receives a list of Messages per read (vectorised work);
- options: count, block_ms, start_id ("$" new entries only, "0" everything), max_deliveries,
  on_error ("retry" | "dead_letter" | "skip"), retry_delay_ms, claim_idle_ms, dead_letter_stream.
`record.message` is the decoded dict; `record.key` the entry id; `record.json(field)` parses a JSON field.""",
    "timers": """\
# Timers

`@app.timer(seconds)` runs a function at a fixed rate (no drift; a slow run skips ticks, never overlaps).
Failures are logged and the timer keeps its schedule. Headless with `--workers N`, timers run in worker 0 only.""",
    "storage": """\
# Shared state

`await app.storage.write(key, value)`, `read(key, default)`, `delete`, `exists`, `keys`, `clear`,
and atomic `update(key, fn)` / `incr(key)`. Backends: "manager" (one host, default) or "redis"
(`STREAMMACHINE_STORAGE=redis`: a Redis hash, shared across hosts and with this MCP server's storage_* tools).""",
    "mcp": """\
# This MCP server

Tools: stream_send, stream_send_batch, stream_read, stream_info, stream_list, stream_trim; stream_groups,
stream_pending, stream_group_create/read/ack/reset/destroy; stream_dead_letters, stream_dead_letter_show/replay/purge;
storage_read/write/delete/keys/clear;
health_check, redis_info, redis_ping; obj_get/obj_list/obj_delete (signed objects of RedisObjectStorage, under
the object prefix only); ohlc_create/update/get_candles/get_completed/flush/clear/stats/list.
Resources: streammachine://config, streammachine://status.
Start it with `streammachine-mcp` (stdio) or `streammachine mcp --transport streamable-http --port 8000`;
`--read-only` hides the tools that write. Beyond loopback, HTTP needs STREAMMACHINE_MCP_TOKEN.""",
    "ohlc": """\
# OHLC candles

`agg = create_ohlc_aggregator(intervals=[60000, 300000])`; `agg.update_tick(symbol, price, volume, ts_ms)`;
`agg.get_candles(symbol, 60000)`, `agg.get_completed_candles(...)`, `agg.flush_interval(...)` (returns and removes
completed candles). In an app, a batch agent feeds ticks and a timer flushes completed candles to a stream.
Here: ohlc_create, then ohlc_update per tick, then ohlc_get_candles / ohlc_get_completed / ohlc_flush.""",
}

_PATTERNS = {
    "producer-consumer": """\
## Producer-consumer (task queue)
```python
@app.timer(1)
async def producer():
    await app.send("work_queue", {"task_id": "123"})

@app.agent("work_queue", group="workers", concurrency=4)
async def worker(record):
    await handle(record.message)
```
Scale out with `streammachine run app.py --workers N`: every worker joins the group "workers".""",
    "pipeline": """\
## Pipeline (chained stages)
```python
@app.agent("stage1", group="s1")
async def stage1(record):
    await app.send("stage2", {"value": int(record.message["value"]) * 2})

@app.agent("stage2", group="s2")
async def stage2(record):
    print(record.message["value"])
```""",
    "fan-out": """\
## Fan-out (every group sees every entry)
```python
@app.agent("events", group="analytics")
async def analytics(record): ...

@app.agent("events", group="audit")
async def audit(record): ...
```""",
    "time-series": """\
## Time series (rolling windows)
```python
buffer = TimeSeriesBuffer(max_age_seconds=300)

@app.agent("ticks", group="analytics", batch=True)
async def analyze(records):
    buffer.append(streams_to_dataframe([("ticks", [m.data for m in records])]))
    recent = buffer.get()
```""",
    "stateful": """\
## Stateful (counters, aggregates)
```python
@app.agent("clicks", group="counter")
async def count(record):
    await app.storage.incr(f"clicks:{record.message['page']}")
```
Use STREAMMACHINE_STORAGE=redis to share the state across hosts (and with the MCP storage_* tools).""",
    "ohlc": """\
## OHLC candles from ticks
```python
agg = create_ohlc_aggregator(intervals=[60000])

@app.agent("ticks", group="ohlc")
async def tick(record):
    m = record.message
    agg.update_tick(m["symbol"], float(m["price"]), float(m["volume"]), record.timestamp_ms)

@app.timer(1)
async def emit():
    for symbol in agg.symbols:
        for candle in agg.flush_interval(symbol, 60000):
            await app.send("candles_1m", format_candle_for_redis(candle, symbol, 60000))
```""",
}


def _pick(table: dict, key: str, what: str) -> str:
    if key not in table:
        raise ValueError(f"{what} {key!r}: expected one of {', '.join(table)}")
    return table[key]


def guide(topic: str = "overview") -> str:
    return _pick(_GUIDE, topic, "topic")


def patterns(pattern: str = "all") -> str:
    if pattern == "all":
        return "# Stream-processing patterns with StreamMachine\n\n" + "\n\n".join(_PATTERNS.values())
    return _pick(_PATTERNS, pattern, "pattern")
