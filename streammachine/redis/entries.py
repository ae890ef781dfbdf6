"""The shapes of stream read replies in redis-py, and stream ids.

redis-py hands back a multi-stream read (XREAD, XREADGROUP) as

- RESP2: ``[[stream, [(id, fields), ...]], ...]``
- RESP3: ``{stream: [[(id, fields), ...]]}`` (each value wraps the entry list
  in one more list; checked against a real server with ``protocol=3``)

and a single stream's entries (XRANGE, one stream of a read) as a flat
``[(id, fields), ...]``. Names, ids, field names and values are bytes, or str
with ``decode_responses=True``. An entry deleted while pending in a group
comes back with empty (or, in older versions, None) fields.

Everything that accepts "a read reply" goes through ``iter_stream_batches``,
so the shape rules live here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterator, Optional, Sequence, Tuple, Union

MAX_TIMESTAMP_MS = 2**63 - 1  # timestamps are held as int64
MAX_SEQUENCE = 2**64 - 1  # Redis's sequence part is an unsigned 64-bit number

StreamName = Union[str, bytes, None]

_ID_EXPECTED = "expected '<milliseconds>-<sequence>' (e.g. '1638360000000-0') as str or bytes"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_stream_id(entry_id: Union[str, bytes]) -> Tuple[int, int]:
    """``"1638360000000-3"`` (str or bytes) -> ``(1638360000000, 3)``.

    Raises ValueError naming the id for anything that is not two runs of
    ASCII digits joined by ``-``, or whose milliseconds overflow int64.
    """
    ms: Union[str, bytes]
    sep: Union[str, bytes]
    seq: Union[str, bytes]
    if type(entry_id) is bytes:
        ms, sep, seq = entry_id.partition(b"-")
        valid = bool(sep) and ms.isdigit() and seq.isdigit()  # bytes.isdigit is ASCII-only
    elif isinstance(entry_id, str):
        ms, sep, seq = entry_id.partition("-")
        valid = bool(sep) and ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit()
    else:
        raise ValueError(f"malformed stream id {_short(entry_id)}: {_ID_EXPECTED}")
    if not valid:
        raise ValueError(f"malformed stream id {_short(entry_id)}: {_ID_EXPECTED}")
    millis = int(ms)
    if millis > MAX_TIMESTAMP_MS:
        raise ValueError(f"stream id {_short(entry_id)}: milliseconds exceed int64")
    return millis, int(seq)


def id_before(entry_id: Union[str, bytes]) -> str:
    """The greatest stream id below ``entry_id`` ("0-0" for the smallest): a start id that includes ``entry_id``."""
    ms, seq = parse_stream_id(entry_id)
    if seq:
        return f"{ms}-{seq - 1}"
    return f"{ms - 1}-18446744073709551615" if ms else "0-0"


def id_after(entry_id: Union[str, bytes]) -> str:
    """The smallest stream id after ``entry_id`` (an exclusive range start for XRANGE/XPENDING)."""
    millis, seq = parse_stream_id(entry_id)
    return f"{millis}-{seq + 1}" if seq < MAX_SEQUENCE else f"{millis + 1}-0"


def parse_stream_id_timestamp(entry_id: Union[str, bytes]) -> int:
    """The milliseconds part of a stream id: ``"1638360000000-0"`` -> ``1638360000000``."""
    return parse_stream_id(entry_id)[0]


def is_entry(item: Any) -> bool:
    """True for one ``(id, fields)`` pair: an id (str/bytes) and a mapping (or None)."""
    return (
        isinstance(item, (tuple, list))
        and len(item) == 2
        and isinstance(item[0], (str, bytes))
        and (item[1] is None or isinstance(item[1], Mapping))
    )


def _entry_list(value: Any, stream: Any) -> Sequence:
    if not isinstance(value, (list, tuple)):
        raise ValueError(
            f"stream {_short(stream)}: expected a list of (id, fields) entries, got {type(value).__name__} {_short(value)}"
        )
    return value


def iter_stream_batches(streams: Any) -> Iterator[Tuple[StreamName, Sequence]]:
    """Yield ``(stream name, entries)`` for every stream in a read reply.

    Accepts RESP2 and RESP3 XREAD/XREADGROUP replies and a flat list of
    ``(id, fields)`` entries (the name is then None); None or an empty reply
    yields nothing. The entries themselves are not checked here (callers
    decide whether a bad entry is an error or a skipped row); a reply of the
    wrong shape raises ValueError naming what it got.
    """
    if streams is None:
        return
    if isinstance(streams, Mapping):
        for name, value in streams.items():
            value = _entry_list(value, name)
            if value and not is_entry(value[0]):
                # RESP3 wraps the entries in one more list: [[(id, fields), ...]]
                for inner in value:
                    yield name, _entry_list(inner, name)
            else:
                yield name, value
        return
    if not isinstance(streams, (list, tuple)):
        raise ValueError(
            "expected a stream read reply (RESP2 list of [stream, entries], RESP3 dict stream -> entries) "
            f"or a list of (id, fields) entries, got {type(streams).__name__} {_short(streams)}"
        )
    if not streams:
        return
    if is_entry(streams[0]):
        yield None, streams
        return
    for item in streams:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], (str, bytes))):
            raise ValueError(f"expected [stream, entries] in a RESP2 read reply, got {_short(item)}")
        yield item[0], _entry_list(item[1], item[0])


def single_stream_entries(reply: Any) -> Sequence:
    """The entries of a one-stream read reply (XREADGROUP of one stream, in any shape above)."""
    return next((entries for _, entries in iter_stream_batches(reply)), [])


def as_text(value: Optional[Union[str, bytes]]) -> Optional[str]:
    """A stream or field name as str (bytes decoded as UTF-8, undecodable bytes replaced)."""
    if type(value) is bytes:
        return value.decode("utf-8", "replace")
    return value  # type: ignore[return-value]  # (type() is, not isinstance: mypy does not narrow it)
