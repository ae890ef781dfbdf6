"""RedisObjectStorage: any picklable Python object in Redis, signed.

Unpickling runs code, so a pickle is only as trustworthy as whoever wrote
it. Every value is stored as ``MAGIC + HMAC-SHA256(key, MAGIC + pickle) +
pickle`` and checked before anything is unpickled: unsigned data, data
signed with another key, or tampered data raise ``SignatureError``.

The key is ``STREAMMACHINE_SECRET_KEY`` (through ``Settings``); when that is
unset, a random key generated on first use in ``<StreamMachine home>/secret.key``
(mode 0600). Every process of one user on one host shares that file; processes
on other hosts need the same STREAMMACHINE_SECRET_KEY.

The signature covers the value, not the Redis key, so RENAME/COPY keep
objects readable; a writer able to move values between keys could only
swap one trusted object for another.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import secrets
from pathlib import Path
from typing import Any, List, Optional

from streammachine._validate import check_positive
from streammachine.config import Settings
from streammachine.redis.connection import RedisConnection

MAGIC = b"SMP1"  # StreamMachine signed pickle, format 1
_DIGEST_SIZE = hashlib.sha256().digest_size
KEY_FILE = "secret.key"
_SCAN_COUNT = 1000
_DELETE_CHUNK = 500


class SignatureError(ValueError):
    """Stored data is unsigned, tampered with, or signed with another key: it was not unpickled."""


class InsecureKeyFileError(PermissionError):
    """The secret key file can be read by other users."""


def sign(secret: bytes, payload: bytes) -> bytes:
    body = MAGIC + payload
    return MAGIC + hmac.new(secret, body, hashlib.sha256).digest() + payload


def verify(secret: bytes, blob: bytes, key: str = "") -> bytes:
    """The payload of a signed blob; raises SignatureError unless the signature checks out."""
    where = f" at {key!r}" if key else ""
    if not isinstance(blob, (bytes, bytearray)) or not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + _DIGEST_SIZE:
        raise SignatureError(f"value{where} is not a signed StreamMachine object; refusing to unpickle it")
    digest = blob[len(MAGIC) : len(MAGIC) + _DIGEST_SIZE]
    payload = bytes(blob[len(MAGIC) + _DIGEST_SIZE :])
    expected = hmac.new(secret, MAGIC + payload, hashlib.sha256).digest()
    if not hmac.compare_digest(digest, expected):
        raise SignatureError(
            f"value{where} fails its signature check (tampered with, or signed with another "
            "STREAMMACHINE_SECRET_KEY); refusing to unpickle it"
        )
    return payload


def secret_key(settings: Settings) -> bytes:
    """STREAMMACHINE_SECRET_KEY, else the per-user key file (created on first use)."""
    if settings.secret_key:
        return settings.secret_key
    return _key_file(Path(settings.home) / KEY_FILE)


def _key_file(path: Path) -> bytes:
    if not path.exists():
        _create_key_file(path)
    if os.name == "posix":
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise InsecureKeyFileError(
                f"{path} (the key that signs stored objects) is readable by other users (mode {mode:o}); "
                f"run: chmod 600 {path}"
            )
    key = path.read_bytes().strip()
    if not key:
        raise InsecureKeyFileError(f"{path} is empty; delete it to have a new key generated")
    return key


def _create_key_file(path: Path) -> None:
    """Write a random key where no other process can see a half-written file.

    The key goes to a private temporary file first, then is linked into
    place; if another process got there first, its key wins and is used.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_hex(32).encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process created it first: use theirs
    finally:
        temporary.unlink(missing_ok=True)


def _escape_glob(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisObjectStorage:
    """Async object storage in Redis with signed pickles.

    ``connection``: a ``RedisConnection`` to share (e.g. ``app.redis``), or
    ``url``; with neither, the same environment settings an App uses. Keys
    are stored under ``prefix``; ``list_keys``/``delete_keys`` patterns are
    glob patterns below it and return/delete only keys under it.
    """

    def __init__(
        self,
        connection: Optional[RedisConnection] = None,
        url: Optional[str] = None,
        prefix: str = "obj:",
        *,
        secret: Optional[bytes] = None,
    ) -> None:
        if connection is not None and url is not None:
            raise ValueError("RedisObjectStorage: pass connection= or url=, not both")
        self._owns_connection = connection is None
        self._connection = connection if connection is not None else RedisConnection(url=url)
        self.prefix = prefix
        self._secret = secret

    @property
    def connection(self) -> RedisConnection:
        return self._connection

    def _key(self, key: str) -> str:
        if not isinstance(key, str) or not key:
            raise ValueError(f"key={key!r}: expected a non-empty str")
        return self.prefix + key

    def _signing_key(self) -> bytes:
        if self._secret is None:
            self._secret = secret_key(self._connection.settings)
        return self._secret

    async def store_with_pickle(self, key: str, obj: Any, ttl: Optional[float] = None) -> bool:
        """Pickle, sign and SET ``obj``; ``ttl`` in seconds (fractions allowed) makes it expire."""
        check_positive("ttl", ttl, optional=True, expected="seconds > 0")
        blob = sign(self._signing_key(), pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        client = await self._connection.get_client()
        expiry = {} if ttl is None else {"px": max(1, round(ttl * 1000))}
        return bool(await client.set(self._key(key), blob, **expiry))

    async def retrieve_with_pickle(self, key: str, default: Any = None) -> Any:
        """The stored object, or ``default`` if there is none; SignatureError if it is not ours."""
        client = await self._connection.get_client()
        blob = await client.get(self._key(key))
        if blob is None:
            return default
        return pickle.loads(verify(self._signing_key(), blob, key))

    async def list_keys(self, pattern: str = "*") -> List[str]:
        """Keys under the prefix matching the glob ``pattern`` (found with SCAN, not KEYS), sorted."""
        client = await self._connection.get_client()
        strip = len(self.prefix)
        found = set()
        async for raw in client.scan_iter(match=_escape_glob(self.prefix) + pattern, count=_SCAN_COUNT):
            name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            found.add(name[strip:])
        return sorted(found)

    async def delete_keys(self, pattern: str = "*") -> int:
        """Delete the keys under the prefix matching ``pattern``; returns how many were deleted."""
        client = await self._connection.get_client()
        deleted = 0
        batch: list = []
        async for raw in client.scan_iter(match=_escape_glob(self.prefix) + pattern, count=_SCAN_COUNT):
            batch.append(raw)
            if len(batch) >= _DELETE_CHUNK:
                deleted += await self._unlink(client, batch)
                batch = []
        if batch:
            deleted += await self._unlink(client, batch)
        return deleted

    async def _unlink(self, client, keys: list) -> int:
        if self._connection.is_cluster:  # keys of one call must share a slot there
            return sum([await client.unlink(k) for k in keys])
        return await client.unlink(*keys)

    async def close(self) -> None:
        """Close the connection if this storage opened it (a shared one stays open)."""
        if self._owns_connection:
            await self._connection.close()

    async def __aenter__(self) -> RedisObjectStorage:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"RedisObjectStorage(prefix={self.prefix!r}, {self._connection!r})"
