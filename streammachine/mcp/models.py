"""The shapes of the MCP tools' structured results (their output schemas)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from pydantic import BaseModel, Field, model_serializer

from streammachine.ohlc.candle import Candle

NEXT_CURSOR = "non-null when more follow: pass it as `cursor` to get the next page"
TRUNCATED = "true when the result limit (STREAMMACHINE_MCP_MAX_RESULT_BYTES) cut this result short or cut values"


class Entry(BaseModel):
    id: str = Field(description="Redis stream entry id, '<ms>-<seq>'")
    fields: Dict[str, str] = Field(description="the entry's fields, decoded as UTF-8")
    truncated_fields: Optional[Dict[str, int]] = Field(
        default=None, description="present when values were cut to fit the result limit: field -> its full length"
    )

    @model_serializer(mode="wrap")
    def _without_empty_truncation(self, handler: Any) -> Any:
        data = handler(self)
        if data.get("truncated_fields") is None:
            data.pop("truncated_fields", None)
        return data


class SendResult(BaseModel):
    stream: str
    id: str = Field(description="id Redis gave the new entry")


class SendBatchResult(BaseModel):
    stream: str
    count: int
    ids: List[str] = Field(description="the new entries' ids, in the order of the messages")


class ReadResult(BaseModel):
    stream: str
    count: int
    entries: List[Entry] = Field(description="oldest first")
    next_cursor: Optional[str] = Field(default=None, description=NEXT_CURSOR)
    truncated: bool = Field(default=False, description=TRUNCATED)


class ConsumerInfo(BaseModel):
    name: str
    pending: int
    idle_ms: int
    inactive_ms: Optional[int] = None


class GroupInfo(BaseModel):
    name: str
    consumers: int
    pending: int
    lag: Optional[int] = Field(default=None, description="entries not yet delivered to the group (None when unknown)")
    last_delivered_id: str
    consumer_details: Optional[List[ConsumerInfo]] = None


class StreamGroups(BaseModel):
    stream: str
    groups: List[GroupInfo]


class StreamInfo(BaseModel):
    stream: str
    length: int
    first_id: Optional[str]
    last_id: Optional[str]
    groups: List[GroupInfo]
    dead_letter_stream: str
    dead_letter_length: int


class StreamList(BaseModel):
    pattern: str
    streams: List[str] = Field(description="sorted")
    next_cursor: Optional[str] = Field(default=None, description=NEXT_CURSOR)
    truncated: bool = Field(default=False, description=TRUNCATED)


class PendingEntry(BaseModel):
    id: str
    consumer: str
    idle_ms: int
    deliveries: int


class PendingResult(BaseModel):
    stream: str
    group: str
    pending: int = Field(description="all entries pending in the group")
    min_id: Optional[str]
    max_id: Optional[str]
    per_consumer: Dict[str, int]
    entries: List[PendingEntry] = Field(description="the oldest pending entries, up to count")
    next_cursor: Optional[str] = Field(default=None, description=NEXT_CURSOR)


class DeadLetter(BaseModel):
    id: str = Field(description="id in the dead-letter stream")
    original_id: Optional[str]
    stream: Optional[str]
    group: Optional[str]
    agent: Optional[str]
    error: Optional[str]
    deliveries: Optional[int]
    at: Optional[float] = Field(default=None, description="epoch seconds when it was dead-lettered")
    fields: Dict[str, str] = Field(description="the original entry's fields")
    truncated_fields: Optional[Dict[str, int]] = Field(
        default=None, description="set when values were cut to fit the result limit: field -> its full length"
    )


class DeadLetters(BaseModel):
    stream: str
    dead_letter_stream: str
    length: int
    entries: List[DeadLetter]
    next_cursor: Optional[str] = Field(default=None, description=NEXT_CURSOR)
    truncated: bool = Field(default=False, description=TRUNCATED)


class ReplayedEntry(BaseModel):
    dead_letter_id: str
    stream: str = Field(description="where it was sent")
    new_id: str = Field(description="its id there")


class DeadLettersReplayed(BaseModel):
    dead_letter_stream: str
    replayed: int = Field(description="dead letters sent back (and removed from the dead-letter stream)")
    per_stream: Dict[str, int] = Field(description="stream -> how many were sent there")
    entries: List[ReplayedEntry] = Field(description="each replayed dead letter's new id (at most 1000 listed)")
    missing: List[str] = Field(description="ids gone by their turn: replayed or purged by someone else meanwhile")
    busy: List[str] = Field(description="cross-slot only: ids another replay is moving right now; retry later")
    atomic: bool = Field(description="false when streams in other cluster slots got XADD then XDEL (a dedupe key)")
    truncated: bool = Field(default=False, description="true when more entries were replayed than listed")
    length: int = Field(description="dead letters left")


class DeadLettersPurged(BaseModel):
    dead_letter_stream: str
    removed: int = Field(description="dead letters deleted")
    length: int = Field(description="dead letters left")


class Trimmed(BaseModel):
    stream: str
    removed: int = Field(description="entries deleted")
    length: int = Field(description="entries left")


class GroupCreated(BaseModel):
    stream: str
    group: str
    created: bool = Field(description="false when the group already existed (nothing changed)")


class GroupDestroyed(BaseModel):
    stream: str
    group: str
    destroyed: bool
    dropped_pending: int = Field(description="entries that were pending in the group (no longer tracked)")


class GroupRead(BaseModel):
    stream: str
    group: str
    consumer: str
    count: int
    entries: List[Entry] = Field(
        description="delivered to the consumer and now pending until acked with stream_group_ack; an entry "
        "deleted since it was delivered has no fields"
    )
    truncated: bool = Field(default=False, description=TRUNCATED)


class GroupReset(BaseModel):
    stream: str
    group: str
    was: str = Field(description="the group's last delivered id before")
    now: str = Field(description="its last delivered id after")
    next_id: Optional[str] = Field(description="the entry its next read gets (null: the next one added)")
    pending: int
    dropped_pending: int = Field(description="pending entries acknowledged (drop_pending)")
    lag: Optional[int] = None


class Acked(BaseModel):
    stream: str
    group: str
    acked: int = Field(description="ids that were pending and are now acknowledged")


class StorageValue(BaseModel):
    key: str
    exists: bool
    value: Any = None
    truncated: bool = Field(
        default=False, description="true when the value is too big for one result: value is null then"
    )
    size_bytes: Optional[int] = Field(default=None, description="the value's size as JSON, when truncated")


class StorageWritten(BaseModel):
    key: str
    written: bool = True


class StorageDeleted(BaseModel):
    key: str
    deleted: bool


class StorageKeys(BaseModel):
    count: int = Field(description="keys in this page")
    keys: List[str] = Field(description="sorted")
    next_cursor: Optional[str] = Field(default=None, description=NEXT_CURSOR)
    truncated: bool = Field(default=False, description=TRUNCATED)


class Cleared(BaseModel):
    cleared: int = Field(description="how many keys were removed")


class Health(BaseModel):
    status: str = Field(description="'healthy' or 'unhealthy'")
    redis: str = Field(description="'connected' or 'disconnected'")
    server: str = Field(description="the Redis URL, password redacted")
    latency_ms: Optional[float]
    read_only: bool
    error: Optional[str] = None


class Ping(BaseModel):
    pong: bool
    latency_ms: float


class ObjValue(BaseModel):
    key: str
    type: str = Field(description="Python type of the stored object")
    value: Any = Field(default=None, description="the object as JSON when it has a JSON form that fits, else null")
    repr: str = Field(description="repr() of the object, cut at 2000 characters")
    truncated: bool = Field(
        default=False, description="true when the JSON form is too big for one result (value is null)"
    )


class ObjKeys(BaseModel):
    prefix: str
    pattern: str
    count: int = Field(description="keys in this page")
    keys: List[str] = Field(description="sorted, without the prefix")
    next_cursor: Optional[str] = Field(default=None, description=NEXT_CURSOR)
    truncated: bool = Field(default=False, description=TRUNCATED)


class ObjDeleted(BaseModel):
    prefix: str
    pattern: str
    deleted: int


class Candles(BaseModel):
    name: str
    symbol: str
    interval_ms: int
    count: int = Field(description="candles in this result (for ohlc_flush: all removed)")
    candles: List[Candle] = Field(description="oldest first")
    next_cursor: Optional[str] = Field(default=None, description=NEXT_CURSOR)
    truncated: bool = Field(default=False, description=TRUNCATED)


class OhlcCreated(BaseModel):
    name: str
    intervals: List[int]
    replaced: bool


class OhlcUpdated(BaseModel):
    name: str
    symbol: str
    timestamp_ms: int
    tick_count: int


class OhlcStats(BaseModel):
    name: str
    implementation: str = Field(description="'cython' or 'python'")
    intervals: List[int]
    tick_count: int
    late_ticks: int = Field(description="ticks for already-flushed candles (dropped)")
    rejected: int
    symbols: List[str]
    candles: Dict[str, Dict[str, int]] = Field(description="symbol -> interval_ms -> candles held")


class OhlcList(BaseModel):
    aggregators: List[OhlcStats]
