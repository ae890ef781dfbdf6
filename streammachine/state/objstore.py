"""RedisObjectStorage: any picklable Python object in Redis, signed.

Unpickling runs code, so a pickle is only as trustworthy as whoever wrote
it. Every value is stored as ``MAGIC + HMAC-SHA256 + header + pickle`` and
checked before anything is unpickled: unsigned data, data signed with
another key, or tampered data raise ``SignatureError``.

What the MAC covers: the format (``MAGIC``), the header (the mode and the
time of signing) and the pickle, and, by default, the full Redis key the
value is stored under (prefix included). So a value copied to another key or
another prefix (user:bob:role over user:alice:role) is refused. The explicit
portable mode (``portable=True``) signs without the key, for data that must
survive RENAME/COPY; a storage in the default mode refuses portable values,
and values of the older format 1 (which never bound the key) are read only
in portable mode. Not covered: rolling a key back to an older value signed
for that same key (``max_age`` bounds how old a value may be), deleting
values, and reading them (they are signed, not encrypted).

The key is ``STREAMMACHINE_SECRET_KEY`` (through ``Settings``); when that is
unset, a random key generated on first use in ``<StreamMachine home>/secret.key``
(mode 0600). Every process of one user on one host shares that file; processes
on other hosts need the same STREAMMACHINE_SECRET_KEY.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import secrets
import struct
import time
from pathlib import Path
from typing import Any, List, Optional

from streammachine._validate import check_positive
from streammachine.config import Settings
from streammachine.redis.connection import RedisConnection

MAGIC = b"SMO2"  # StreamMachine signed object, format 2: the header is signed, the key bound unless portable
LEGACY_MAGIC = b"SMP1"  # format 1: the MAC covered the pickle only (read in portable mode)
_DIGEST_SIZE = hashlib.sha256().digest_size
_HEADER = struct.Struct(">BQ")  # mode, signed at (epoch ms)
_BOUND, _PORTABLE = 0, 1
_PAYLOAD_AT = len(MAGIC) + _DIGEST_SIZE + _HEADER.size
KEY_FILE = "secret.key"
_SCAN_COUNT = 1000
_DELETE_CHUNK = 500


class SignatureError(ValueError):
    """Stored data is unsigned, tampered with, signed with another key or for another Redis key: not unpickled."""


class InsecureKeyFileError(PermissionError):
    """The secret key file can be read by other users."""


def _mac(secret: bytes, header: bytes, key: Optional[str], payload: bytes) -> bytes:
    mac = hmac.new(secret, MAGIC + header, hashlib.sha256)
    if key is not None:
        name = key.encode("utf-8")
        mac.update(struct.pack(">I", len(name)) + name)  # length-prefixed: no key is a prefix of another's input
    mac.update(payload)
    return mac.digest()


def sign(secret: bytes, payload: bytes, key: Optional[str], *, signed_at_ms: Optional[int] = None) -> bytes:
    """A signed blob of ``payload`` for the Redis key ``key`` (None: portable, valid under any key)."""
    stamp = int(time.time() * 1000) if signed_at_ms is None else signed_at_ms
    header = _HEADER.pack(_PORTABLE if key is None else _BOUND, stamp)
    return MAGIC + _mac(secret, header, key, payload) + header + payload


def verify(secret: bytes, blob: Any, key: str, *, portable: bool = False, max_age: Optional[float] = None) -> bytes:
    """The payload of a blob read from the Redis key ``key``; raises SignatureError unless it may be unpickled."""
    where = f" at {key!r}"
    if isinstance(blob, (bytes, bytearray)) and bytes(blob[: len(LEGACY_MAGIC)]) == LEGACY_MAGIC:
        if not portable:
            raise SignatureError(
                f"value{where} is in signed format 1, which does not bind the key it is stored under; refusing it "
                "(read it with RedisObjectStorage(portable=True), and store it again to bind it)"
            )
        return _verify_legacy(secret, bytes(blob), where)
    if not isinstance(blob, (bytes, bytearray)) or not blob.startswith(MAGIC) or len(blob) < _PAYLOAD_AT:
        raise SignatureError(f"value{where} is not a signed StreamMachine object; refusing to unpickle it")
    digest = blob[len(MAGIC) : len(MAGIC) + _DIGEST_SIZE]
    header = bytes(blob[len(MAGIC) + _DIGEST_SIZE : _PAYLOAD_AT])
    payload = bytes(blob[_PAYLOAD_AT:])
    mode, signed_at_ms = _HEADER.unpack(header)
    if mode not in (_BOUND, _PORTABLE) or not hmac.compare_digest(
        digest, _mac(secret, header, key if mode == _BOUND else None, payload)
    ):
        raise SignatureError(
            f"value{where} fails its signature check (tampered with, signed for another key or prefix, or signed "
            "with another STREAMMACHINE_SECRET_KEY); refusing to unpickle it"
        )
    if mode == _PORTABLE and not portable:
        raise SignatureError(
            f"value{where} was signed in portable mode (valid under any key, so it may have been copied here); "
            "refusing it (read it with RedisObjectStorage(portable=True) if that is intended)"
        )
    if max_age is not None:
        age = time.time() - signed_at_ms / 1000
        if age > max_age:
            raise SignatureError(f"value{where} was signed {age:.0f} s ago, more than max_age={max_age} s; refusing it")
    return payload


def _verify_legacy(secret: bytes, blob: bytes, where: str) -> bytes:
    digest = blob[len(LEGACY_MAGIC) : len(LEGACY_MAGIC) + _DIGEST_SIZE]
    payload = blob[len(LEGACY_MAGIC) + _DIGEST_SIZE :]
    expected = hmac.new(secret, LEGACY_MAGIC + payload, hashlib.sha256).digest()
    if len(blob) < len(LEGACY_MAGIC) + _DIGEST_SIZE or not hmac.compare_digest(digest, expected):
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

    Each value's signature binds its full Redis key (see the module
    docstring). ``portable=True`` signs values valid under any key (they
    survive RENAME/COPY, and can be replayed under any key by whoever can
    write to Redis) and reads portable and format-1 values as well.
    ``max_age`` (seconds) refuses values signed longer ago than that.
    """

    def __init__(
        self,
        connection: Optional[RedisConnection] = None,
        url: Optional[str] = None,
        prefix: str = "obj:",
        *,
        secret: Optional[bytes] = None,
        portable: bool = False,
        max_age: Optional[float] = None,
    ) -> None:
        if connection is not None and url is not None:
            raise ValueError("RedisObjectStorage: pass connection= or url=, not both")
        check_positive("max_age", max_age, optional=True, expected="seconds > 0")
        self._owns_connection = connection is None
        self._connection = connection if connection is not None else RedisConnection(url=url)
        self.prefix = prefix
        self.portable = bool(portable)
        self.max_age = max_age
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
        full_key = self._key(key)
        payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        blob = sign(self._signing_key(), payload, None if self.portable else full_key)
        client = await self._connection.get_client()
        expiry = {} if ttl is None else {"px": max(1, round(ttl * 1000))}
        return bool(await client.set(full_key, blob, **expiry))

    async def retrieve_with_pickle(self, key: str, default: Any = None) -> Any:
        """The stored object, or ``default`` if there is none; SignatureError if it is not ours."""
        full_key = self._key(key)
        client = await self._connection.get_client()
        blob = await client.get(full_key)
        if blob is None:
            return default
        payload = verify(self._signing_key(), blob, full_key, portable=self.portable, max_age=self.max_age)
        return pickle.loads(payload)

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
        mode = ", portable" if self.portable else ""
        return f"RedisObjectStorage(prefix={self.prefix!r}{mode}, {self._connection!r})"
