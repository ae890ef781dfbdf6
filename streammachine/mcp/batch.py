"""An all-or-nothing batch of XADDs for ``stream_send_batch``.

A pipelined batch sent in chunks can be cut between chunks (a client that
cancels or disconnects, a record Redis refuses): part of it is written and
the caller never learns which ids, so a retry duplicates them. Here the
whole batch is one MULTI ... EXEC written in one go: Redis applies every
XADD or, when the connection ends or a command is refused before EXEC,
none.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence

from streammachine.redis.entries import as_text
from streammachine.redis.records import encode_record, find_unencodable
from streammachine.redis.transport import Transport


# to be replaced by the producer's atomic batch
async def send_batch_atomic(
    client: Any, stream: str, records: Sequence[Mapping[str, Any]], *, maxlen: Optional[int] = None
) -> List[str]:
    """XADD every record in one MULTI/EXEC round trip; the new ids in order. Every record is validated first."""
    encoded = [encode_record(stream, record) for record in records]
    head = ["XADD", stream, "MAXLEN", "~", maxlen, "*"] if maxlen is not None else ["XADD", stream, "*"]
    commands = []
    for fields in encoded:
        command = list(head)
        for pair in fields.items():
            command += pair
        commands.append(command)
    try:
        ids = await Transport(client).send(commands, atomic=True)
    except UnicodeEncodeError:  # raised while encoding, before anything was sent
        raise find_unencodable(stream, encoded) or ValueError(
            f"stream {stream!r}: a field is not valid UTF-8"
        ) from None
    return [as_text(i) or "" for i in ids]
