"""Hot-path round trips: RESP written and read straight on a pooled redis-py connection.

redis-py packs every argument through several Python calls and re-joins a
growing buffer (an XACK of 1000 ids costs ~300 us; a pipeline of 1000 XADDs
~5 ms), and wraps each command in retry, observability and reply parsing.
The two hot paths (the consumer's XACK + XREADGROUP, ``send_batch``'s XADDs)
instead encode their commands here in one tight loop, write them in one go
on a connection taken from the client's own pool, and read the raw replies.

Errors are the usual redis-py ones (``ResponseError``, ``ConnectionError``,
``TimeoutError``); a connection that saw any error, or a cancellation, is
disconnected before it goes back to the pool, so no unread reply ever
reaches its next user. Clients this cannot serve (cluster, single-connection,
subclasses) get ``None`` from ``direct_pool`` and callers use redis-py.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

from redis.asyncio import Redis
from redis.exceptions import ResponseError

# a raw read reply -> (id, fields) pairs: compiled (its twin in _speedups/_decode_py.py); callers import it here
from streammachine._speedups import entries_with_fields as entries_with_fields

_pack_command: Optional[Callable[[tuple], bytes]]
try:  # hiredis packs a command in C as the loop below does (and as redis-py itself does when it has hiredis)
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - hiredis is a dependency; without it the loop does the work
    _pack_command = None

_BULK = tuple(b"$%d\r\n" % n for n in range(128))


def encode_command(args: Sequence, encoder) -> bytes:
    """One command in RESP. bytes go as they are, str with the client's encoding, int and float as redis-py
    writes them (``%d``, ``repr``), the rest via ``encoder`` (which also refuses what cannot be sent)."""
    encoding, errors, encode = encoder.encoding, encoder.encoding_errors, encoder.encode
    if _pack_command is not None and encoding == "utf-8" and errors == "strict":
        try:
            return _pack_command(args if type(args) is tuple else tuple(args))
        except TypeError:  # a type it does not take (bool, None, numpy ints...): the loop encodes or refuses it
            pass
    out = [b"*%d\r\n" % len(args)]
    append = out.append
    for arg in args:
        kind = type(arg)
        if kind is not bytes:
            if kind is str:
                arg = arg.encode(encoding, errors)
            elif kind is int:
                arg = b"%d" % arg
            elif kind is float:
                arg = repr(arg).encode()
            else:
                arg = encode(arg)
        size = len(arg)
        append(_BULK[size] if size < 128 else b"$%d\r\n" % size)
        append(arg)
        append(b"\r\n")
    return b"".join(out)


def direct_pool(client):
    """The connection pool of a plain ``redis.asyncio.Redis`` (not a subclass, cluster or single connection), or None."""
    if type(client) is not Redis or client.single_connection_client:
        return None
    return client.connection_pool


async def _take_connection(pool):
    try:
        return await pool.get_connection()
    except TypeError:  # redis-py < 5.3 wants a command name
        return await pool.get_connection("_")


def encode_commands(commands: Sequence[Sequence], encoder) -> bytes:
    return b"".join([encode_command(args, encoder) for args in commands])


_encoded: dict = {}


def encode_repeated(args: tuple, encoder) -> bytes:
    """``encode_command`` for a command sent again and again (a consumer's XREADGROUP), memoised."""
    key = (args, encoder.encoding, encoder.encoding_errors)
    encoded = _encoded.get(key)
    if encoded is None:
        if len(_encoded) >= 1024:
            _encoded.clear()
        encoded = _encoded[key] = encode_command(args, encoder)
    return encoded


async def round_trip(pool, payload: bytes, replies: int, *, raise_on_error: bool = True) -> List:
    """Write ``payload`` (encoded commands) in one go and read ``replies`` raw replies.

    The first error reply raises; with ``raise_on_error=False`` every reply is read and an error
    reply comes back in place, as a ``ResponseError`` (the connection stays in step: the error was
    read whole).
    """
    connection = await _take_connection(pool)
    try:
        await connection.send_packed_command(payload)
        read = connection.read_response
        if raise_on_error:
            return [await read() for _ in range(replies)]
        out: List = []
        for _ in range(replies):
            try:
                out.append(await read())
            except ResponseError as exc:
                out.append(exc)
        return out
    except BaseException:
        await connection.disconnect(nowait=True)  # replies may be left unread: this connection is spent
        raise
    finally:
        await pool.release(connection)
