"""The one XADD path: every record StreamMachine writes to a stream goes through here.

Callers: ``App.send``/``send_batch`` and ``RedisConnection.xadd``/``pipeline_xadd``
(which the MCP tools ``stream_send``/``stream_send_batch`` use), the CLI's
``streammachine send`` and the ``%streammachine send`` magic (``console.send``).
Each passes its ``maxlen``: the App's ``stream_maxlen``, else
``STREAMMACHINE_STREAM_MAXLEN`` (``MAXLEN ~``: trimmed by whole radix-tree nodes).

- Validation first: every record is encoded (``records.encode_record``) and
  every command encoded for the wire before the first byte is sent, so a bad
  record (named in the error) never leaves a batch half-written.
- Commands reach Redis through ``Transport`` (raw RESP on a plain client,
  a redis-py pipeline on a cluster or a synchronous client), chosen there.
- A batch goes in pipelined round trips of ``PIPELINE_CHUNK`` records.
  Redis applies each XADD on its own: if it refuses some (out of memory at
  ``maxmemory``, say), the others stay written, and ``BatchSendError``
  says which: ``ids`` holds each record's id, None where it was not written.
  Chunks after a refused one are not sent. A connection lost mid-batch
  raises the redis-py error; the records of the round trip in flight may
  or may not have been written.
- ``atomic=True`` sends the whole batch as ONE MULTI/EXEC, however large (a
  chunked batch would be several transactions, atomic one by one only):
  Redis writes every record or none. Every XADD of a batch has the same key
  and arguments, so one that fails inside EXEC (wrong type) fails for all.

Synchronous callers (the CLI, the magics: the magic runs inside the
kernel's running loop, so it can neither ``asyncio.run`` nor wait on that
loop) use ``send_sync``: the same coroutine, run by ``sync.run_sync`` over
their sync client (``Transport`` accepts one), instead of a sync twin that
could drift from this one, as the magic's own XADD did (it forgot maxlen).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from redis.exceptions import ResponseError

from streammachine.redis.entries import as_text
from streammachine.redis.records import encode_record, find_unencodable
from streammachine.redis.sync import run_sync
from streammachine.redis.transport import Prepared, Transport

# Pipelines are sent in slices so a huge send_batch never builds one giant request buffer in memory.
PIPELINE_CHUNK = 5000


class BatchSendError(ResponseError):
    """Redis refused records of a batch; the others were written.

    ``ids[i]`` is record ``i``'s new id, or None where it was not written;
    ``errors[i]`` is the reply that refused record ``i``. Records neither
    written nor refused (``unsent``) were never sent. Resend only what is
    not written, or the written ones are duplicated.
    """

    def __init__(self, stream: str, ids: List[Optional[str]], errors: Dict[int, ResponseError], *, atomic: bool):
        self.stream = stream
        self.ids = ids
        self.errors = errors
        self.atomic = atomic
        first = next(iter(errors.values()))
        reason = f"{type(first).__name__}: {first}"
        if atomic:
            text = f"stream {stream!r}: atomic batch of {len(ids)} records refused, none written ({reason})"
        else:
            text = (
                f"stream {stream!r}: {len(self.written)} of {len(ids)} records written, {len(errors)} refused "
                f"({reason}), {len(self.unsent)} not sent; .ids has each record's id, None where not written"
            )
        super().__init__(text)

    @property
    def written(self) -> List[int]:
        return [i for i, entry_id in enumerate(self.ids) if entry_id is not None]

    @property
    def unsent(self) -> List[int]:
        return [i for i, entry_id in enumerate(self.ids) if entry_id is None and i not in self.errors]


def _unencodable(topic: str, encoded: Sequence[Mapping]) -> ValueError:
    return find_unencodable(topic, encoded) or ValueError(f"stream {topic!r}: a field is not valid UTF-8")


def xadd_options(maxlen: Optional[int], minid: Optional[str] = None) -> tuple:
    """XADD's arguments between the key and the fields: the trim rule, then ``*`` (a new id)."""
    if maxlen is not None:
        return ("MAXLEN", "~", maxlen, "*")
    if minid is not None:  # age-based retention (App(stream_max_age=)): entries older than minid go
        return ("MINID", "~", minid, "*")
    return ("*",)


def _head(topic: str, maxlen: Optional[int], minid: Optional[str] = None) -> tuple:
    return ("XADD", topic, *xadd_options(maxlen, minid))


def _command(head: tuple, fields: Mapping) -> list:
    command = list(head)
    for pair in fields.items():
        command += pair
    return command


def validated_fields(topic: str, record: Mapping[str, Any]) -> Mapping:
    """``record`` encoded as stream fields, or the error ``send`` would raise (checks only: no I/O)."""
    fields = encode_record(topic, record)
    unencodable = find_unencodable(topic, [fields])
    if unencodable is not None:
        raise unencodable
    return fields


async def send(
    transport: Transport,
    topic: str,
    record: Mapping[str, Any],
    *,
    maxlen: Optional[int] = None,
    minid: Optional[str] = None,
) -> str:
    """XADD one record; its new id."""
    fields = encode_record(topic, record)
    try:
        prepared = transport.prepare([_command(_head(topic, maxlen, minid), fields)])
    except UnicodeEncodeError:
        raise _unencodable(topic, [fields]) from None
    (new_id,) = await transport.send_prepared(prepared)
    return as_text(new_id)  # type: ignore[return-value]


async def send_batch(
    transport: Transport,
    topic: str,
    records: Sequence[Mapping[str, Any]],
    *,
    maxlen: Optional[int] = None,
    minid: Optional[str] = None,
    atomic: bool = False,
) -> List[str]:
    """XADD every record, in order; their new ids. Raises ``BatchSendError`` when Redis refuses some."""
    encoded = [encode_record(topic, record) for record in records]
    if not encoded:
        return []
    head = _head(topic, maxlen, minid)
    commands = [_command(head, fields) for fields in encoded]
    size = len(commands) if atomic else PIPELINE_CHUNK
    try:
        chunks = [transport.prepare(commands[start : start + size]) for start in range(0, len(commands), size)]
    except UnicodeEncodeError:
        raise _unencodable(topic, encoded) from None
    if atomic:
        return await _send_atomic(transport, topic, chunks[0])
    ids: List[Optional[str]] = []
    append = ids.append
    errors: Dict[int, ResponseError] = {}
    for chunk in chunks:
        for reply in await transport.send_prepared(chunk, raise_on_error=False):
            if type(reply) is bytes:
                append(reply.decode())
            elif isinstance(reply, ResponseError):
                errors[len(ids)] = reply
                append(None)
            else:
                append(reply)
        if errors:
            ids += [None] * (len(encoded) - len(ids))
            raise BatchSendError(topic, ids, errors, atomic=False)
    return ids  # type: ignore[return-value]


async def _send_atomic(transport: Transport, topic: str, prepared: Prepared) -> List[str]:
    count = len(prepared.commands)
    try:
        replies = await transport.send_prepared(prepared, atomic=True)
    except ResponseError as exc:
        raise BatchSendError(topic, [None] * count, dict.fromkeys(range(count), exc), atomic=True) from exc
    return [as_text(reply) for reply in replies]  # type: ignore[misc]


def send_sync(client: Any, topic: str, record: Mapping[str, Any], *, maxlen: Optional[int] = None) -> str:
    """``send`` on a synchronous redis-py client (the CLI, the magics)."""
    return run_sync(send(Transport(client), topic, record, maxlen=maxlen))
