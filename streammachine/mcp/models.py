"""The shapes of the MCP tools' structured results (their output schemas)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from pydantic import BaseModel, Field

from streammachine.ohlc.candle import Candle


class Entry(BaseModel):
    id: str = Field(description="Redis stream entry id, '<ms>-<seq>'")
    fields: Dict[str, str] = Field(description="the entry's fields, decoded as UTF-8")


class SendResult(BaseModel):
    stream: str
    id: str = Field(description="id Redis gave the new entry")


class SendBatchResult(BaseModel):
    stream: str
    count: int
    ids: List[str]


class ReadResult(BaseModel):
    stream: str
    count: int
    entries: List[Entry]


class ConsumerInfo(BaseModel):
    name: str
    pending: int
    idle_ms: int
    inactive_ms: Optional[int] = None


class GroupInfo(BaseModel):
    name: str
    consumers: int
    pending: int
    lag: Optional[int] = Field(None, description="entries not yet delivered to the group (None when unknown)")
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
    streams: List[str]
    truncated: bool = Field(description="true when more streams matched than the limit")


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


class DeadLetter(BaseModel):
    id: str = Field(description="id in the dead-letter stream")
    original_id: Optional[str]
    stream: Optional[str]
    group: Optional[str]
    agent: Optional[str]
    error: Optional[str]
    deliveries: Optional[int]
    at: Optional[float] = Field(None, description="epoch seconds when it was dead-lettered")
    fields: Dict[str, str] = Field(description="the original entry's fields")


class DeadLetters(BaseModel):
    stream: str
    dead_letter_stream: str
    length: int
    entries: List[DeadLetter]


class StorageValue(BaseModel):
    key: str
    exists: bool
    value: Any = None


class StorageWritten(BaseModel):
    key: str
    written: bool = True


class StorageDeleted(BaseModel):
    key: str
    deleted: bool


class StorageKeys(BaseModel):
    count: int
    keys: List[str]


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
    value: Any = Field(None, description="the object as JSON when it has a JSON form, else null")
    repr: str = Field(description="repr() of the object, truncated")


class ObjKeys(BaseModel):
    pattern: str
    count: int
    keys: List[str]


class ObjDeleted(BaseModel):
    pattern: str
    deleted: int


class Candles(BaseModel):
    name: str
    symbol: str
    interval_ms: int
    count: int
    candles: List[Candle]


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
