"""Pure-Python twin of _decode.pyx."""


def decode_dict_bytes_to_utf8(raw: dict) -> dict:
    """Decode a stream entry's fields (bytes or str keys/values) to str -> str."""
    return {
        (k.decode("utf-8", "replace") if type(k) is bytes else str(k)): (
            v.decode("utf-8", "replace") if type(v) is bytes else str(v)
        )
        for k, v in raw.items()
    }


def entries_with_fields(reply) -> list:
    """A raw XREADGROUP/XREAD reply (RESP2 or RESP3) for one stream -> ``[(id, fields dict), ...]``."""
    if not reply:
        return []
    entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
    out: list = []
    append = out.append
    for entry_id, flat in entries:
        if flat is None:  # deleted while pending
            append((entry_id, None))
        else:
            pairs = iter(flat)
            append((entry_id, dict(zip(pairs, pairs))))
    return out
