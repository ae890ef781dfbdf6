"""FastOHLCConsumer's state in Redis: the checkpoint key, its encoding, the one atomic write.

The checkpoint is JSON (orjson)::

    {"format": 1, "seq": 42, "last_id": "1700000000000-0", "aggregator": {...the FastOHLC snapshot...}}

``seq`` counts the writes, so a writer whose reply was lost can read the
key back and tell whether its write went through. ``last_id`` is the last
input stream id whose tick the snapshot includes.
"""

from __future__ import annotations

import hashlib
from typing import List, Optional, Tuple

import orjson
from redis.exceptions import NoScriptError

from streammachine.ohlc.candle import FIELDS as CANDLE_FIELDS
from streammachine.redis.entries import parse_stream_id
from streammachine.redis.transport import Transport, same_slot

FORMAT = 1
RECORD_FIELDS = ("symbol", "interval_ms", *CANDLE_FIELDS)  # format_candle_for_redis's order

StreamId = Tuple[int, int]

# Candles and checkpoint in one atomic step. The output keys' types are checked before anything is
# written: a script (like a MULTI) does not undo what ran before a failing command.
_SCRIPT = """
-- KEYS[1]: the checkpoint key; KEYS[2..]: the output streams
-- ARGV[1]: the checkpoint; ARGV[2]: MAXLEN ('' for none); ARGV[3]: fields per candle (n);
-- ARGV[4 .. 3+n]: the field names; then per candle: its stream's index in KEYS, then its n values
for i = 2, #KEYS do
    local kind = redis.call('TYPE', KEYS[i])['ok']
    if kind ~= 'stream' and kind ~= 'none' then
        return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' holds a ' .. kind .. ', not a stream: nothing written')
    end
end
local n = tonumber(ARGV[3])
local i = 4 + n
while i <= #ARGV do
    local command = {'XADD', KEYS[tonumber(ARGV[i])]}
    if ARGV[2] ~= '' then
        command[3], command[4], command[5] = 'MAXLEN', '~', ARGV[2]
    end
    command[#command + 1] = '*'
    for j = 1, n do
        command[#command + 1] = ARGV[3 + j]
        command[#command + 1] = ARGV[i + j]
    end
    redis.call(unpack(command))
    i = i + n + 1
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""
_SCRIPT_SHA = hashlib.sha1(_SCRIPT.encode()).hexdigest()


def checkpoint_key(input_stream: str, group: str) -> str:
    """``{input_stream}:ohlc:{group}:state``, in the input stream's cluster slot.

    A name without a hash tag becomes the tag (``ticks`` -> ``{ticks}:ohlc:...``,
    the slot of ``ticks``); a tagged one (``{t}.ticks``) is kept as it is.
    """
    opened = input_stream.find("{")
    tagged = opened >= 0 and input_stream.find("}", opened + 1) > opened + 1  # Redis's rule: a non-empty tag
    base = input_stream if tagged else "{" + input_stream + "}"
    return f"{base}:ohlc:{group}:state"


def id_text(key: StreamId) -> str:
    return f"{key[0]}-{key[1]}"


def encode(seq: int, last_id: Optional[StreamId], snapshot: dict) -> bytes:
    return orjson.dumps(
        {"format": FORMAT, "seq": seq, "last_id": None if last_id is None else id_text(last_id), "aggregator": snapshot}
    )


def decode(raw: bytes) -> Tuple[int, Optional[StreamId], dict]:
    """(seq, last_id, aggregator snapshot) of a stored checkpoint; ValueError when it is not one."""
    try:
        checkpoint = orjson.loads(raw)
        if checkpoint.get("format") != FORMAT:
            raise ValueError(f"format {checkpoint.get('format')!r}, expected {FORMAT}")
        last = checkpoint["last_id"]
        return int(checkpoint["seq"]), None if last is None else parse_stream_id(last), checkpoint["aggregator"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"OHLC checkpoint: not a checkpoint this version reads ({exc})") from None


class CheckpointWriter:
    """Writes completed candles and the checkpoint: atomically when one script may touch every key."""

    def __init__(self, key: str, maxlen: Optional[int]) -> None:
        self.key, self.maxlen = key, maxlen

    def atomic(self, client, streams: List[str]) -> bool:
        """True on a single server, or on a cluster when ``streams`` share the checkpoint key's slot."""
        return same_slot(client, self.key, *streams)

    async def write(self, client, candles: List[Tuple[str, dict]], checkpoint: bytes) -> None:
        """XADD ``candles`` ((stream, record) pairs) and SET the checkpoint; raises if it did not happen."""
        streams = list(dict.fromkeys(stream for stream, _ in candles))
        if not self.atomic(client, streams):
            # Different cluster slots: candles first, then the checkpoint. A failure in between sends
            # those candles again with the next write (or after a restart): duplicates, never a loss.
            if candles:
                pipe = client.pipeline(transaction=False)
                for stream, record in candles:
                    pipe.xadd(stream, record, maxlen=self.maxlen, approximate=True)
                await pipe.execute()
            await client.set(self.key, checkpoint)
            return
        index = {stream: str(i) for i, stream in enumerate(streams, start=2)}
        args = [checkpoint, "" if self.maxlen is None else str(self.maxlen), str(len(RECORD_FIELDS)), *RECORD_FIELDS]
        for stream, record in candles:
            args.append(index[stream])
            args.extend(record.values())  # format_candle_for_redis writes them in RECORD_FIELDS order
        command = ("EVALSHA", _SCRIPT_SHA, len(streams) + 1, self.key, *streams, *args)
        try:
            await self._run(client, command)
        except NoScriptError:  # a new or flushed server: load the script, once
            await client.script_load(_SCRIPT)
            await self._run(client, command)

    @staticmethod
    async def _run(client, command: tuple) -> None:
        await Transport(client).send([command])  # raw RESP, a per-batch cost that matters; a cluster routes by key

    async def read(self, client) -> Optional[Tuple[int, Optional[StreamId], dict]]:
        raw = await client.get(self.key)
        return None if raw is None else decode(raw)
