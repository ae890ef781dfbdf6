"""Pure-Python twin of _decode.pyx."""


def decode_dict_bytes_to_utf8(raw: dict) -> dict:
    """Decode a stream entry's fields (bytes or str keys/values) to str -> str."""
    return {
        (k.decode("utf-8", "replace") if type(k) is bytes else str(k)): (
            v.decode("utf-8", "replace") if type(v) is bytes else str(v)
        )
        for k, v in raw.items()
    }
