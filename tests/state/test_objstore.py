"""RedisObjectStorage against a real server: signed pickles, SCAN-based listing, the key file."""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import stat
import time
from pathlib import Path

import pytest
import redis

from streammachine import RedisConnection
from streammachine.state.objstore import (
    KEY_FILE,
    LEGACY_MAGIC,
    MAGIC,
    InsecureKeyFileError,
    RedisObjectStorage,
    SignatureError,
    sign,
)

UNPICKLED = []


class Exploit:
    """Unpickling this appends to UNPICKLED: proof that a refused value was never unpickled."""

    def __reduce__(self):
        return (UNPICKLED.append, ("ran",))


@pytest.fixture
async def storage(redis_url):
    store = RedisObjectStorage(url=redis_url)
    yield store
    await store.close()


@pytest.fixture
def raw(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def home() -> Path:
    return Path(os.environ["STREAMMACHINE_HOME"])


async def test_round_trip(storage):
    value = {"complex": ["object", 123], "nested": {"set": {1, 2}, "bytes": b"\x00\xff"}, "tuple": (1.5, None)}
    assert await storage.store_with_pickle("my_key", value) is True
    assert await storage.retrieve_with_pickle("my_key") == value
    assert await storage.retrieve_with_pickle("missing") is None
    assert await storage.retrieve_with_pickle("missing", default=42) == 42


async def test_values_are_signed_under_the_prefix(storage, raw):
    await storage.store_with_pickle("k", [1, 2])
    blob = raw.get("obj:k")
    assert blob.startswith(MAGIC) and raw.get("k") is None


async def test_ttl_expires_values(storage, raw):
    await storage.store_with_pickle("short", 1, ttl=30)
    await storage.store_with_pickle("fraction", 1, ttl=0.5)
    await storage.store_with_pickle("forever", 1)
    assert 29_000 < raw.pttl("obj:short") <= 30_000
    assert 0 < raw.pttl("obj:fraction") <= 500
    assert raw.pttl("obj:forever") == -1
    for bad in (0, -1, "10", True):
        with pytest.raises(ValueError, match="ttl"):
            await storage.store_with_pickle("bad", 1, ttl=bad)


async def test_tampered_data_is_refused_and_never_unpickled(storage, raw):
    await storage.store_with_pickle("k", "fine")
    blob = bytearray(raw.get("obj:k"))
    payload = pickle.dumps(Exploit())
    raw.set("obj:k", bytes(blob[: len(MAGIC) + 32]) + payload)  # a valid-looking header on another payload
    with pytest.raises(SignatureError, match="fails its signature check"):
        await storage.retrieve_with_pickle("k")
    raw.set("obj:k", payload)  # a plain, unsigned pickle
    with pytest.raises(SignatureError, match="not a signed StreamMachine object"):
        await storage.retrieve_with_pickle("k")
    raw.set("obj:k", b"")
    with pytest.raises(SignatureError):
        await storage.retrieve_with_pickle("k")
    assert UNPICKLED == []


async def test_another_key_cannot_read_or_forge(redis_url, raw):
    async with (
        RedisObjectStorage(url=redis_url, secret=b"one") as one,
        RedisObjectStorage(url=redis_url, secret=b"two") as two,
    ):
        await one.store_with_pickle("k", "secret plans")
        with pytest.raises(SignatureError):
            await two.retrieve_with_pickle("k")
        raw.set("obj:k", sign(b"two", pickle.dumps(Exploit()), "obj:k"))
        with pytest.raises(SignatureError):
            await one.retrieve_with_pickle("k")
    assert UNPICKLED == []


async def test_a_value_moved_to_another_key_or_prefix_is_refused(redis_url, raw):
    """Issue 11 item 15: the signature binds the full Redis key, so bob's role copied over alice's (COPY, or
    GET/SET of the bytes, within a prefix or across prefixes) is refused, never handed out as alice's."""
    async with (
        RedisObjectStorage(url=redis_url, prefix="user:", secret=b"k") as users,
        RedisObjectStorage(url=redis_url, prefix="admin:", secret=b"k") as admins,
    ):
        await users.store_with_pickle("alice:role", "viewer")
        await users.store_with_pickle("bob:role", "owner")
        await admins.store_with_pickle("alice:role", "nobody")
        raw.copy("user:bob:role", "user:alice:role", replace=True)
        with pytest.raises(SignatureError, match="signed for another key"):
            await users.retrieve_with_pickle("alice:role")
        raw.set("admin:alice:role", raw.get("user:bob:role"))  # across prefixes, same key below them
        with pytest.raises(SignatureError, match="'admin:alice:role'"):
            await admins.retrieve_with_pickle("alice:role")
        assert await users.retrieve_with_pickle("bob:role") == "owner"  # in place it still reads
        blob = bytearray(raw.get("user:bob:role"))
        blob[len(MAGIC) + 32] ^= 1  # the mode byte (bound -> portable) is signed too
        raw.set("user:bob:role", bytes(blob))
        with pytest.raises(SignatureError, match="fails its signature check"):
            await users.retrieve_with_pickle("bob:role")


async def test_portable_mode_is_explicit(redis_url, raw):
    """portable=True: values survive RENAME (and so may be replayed under any key); a storage in the default
    mode refuses them, and reads format-1 values (which never bound the key) only in portable mode."""
    async with (
        RedisObjectStorage(url=redis_url, secret=b"k", portable=True) as portable,
        RedisObjectStorage(url=redis_url, secret=b"k") as bound,
    ):
        await portable.store_with_pickle("old", [1, 2])
        raw.rename("obj:old", "obj:new")
        assert await portable.retrieve_with_pickle("new") == [1, 2]
        with pytest.raises(SignatureError, match="portable mode"):
            await bound.retrieve_with_pickle("new")
        await bound.store_with_pickle("mine", 3)
        assert await portable.retrieve_with_pickle("mine") == 3  # a bound value, read where it was stored
        payload = pickle.dumps({"v": 1})
        legacy = LEGACY_MAGIC + hmac.new(b"k", LEGACY_MAGIC + payload, hashlib.sha256).digest() + payload
        raw.set("obj:legacy", legacy)
        with pytest.raises(SignatureError, match="format 1"):
            await bound.retrieve_with_pickle("legacy")
        assert await portable.retrieve_with_pickle("legacy") == {"v": 1}
        raw.set("obj:legacy", legacy[:-2] + bytes([legacy[-2] ^ 1]) + legacy[-1:])
        with pytest.raises(SignatureError, match="fails its signature check"):
            await portable.retrieve_with_pickle("legacy")
    assert UNPICKLED == []


async def test_max_age_refuses_values_signed_too_long_ago(redis_url, raw):
    """A rolled-back key holds an older value signed for it: max_age bounds how old that can be."""
    hour_ago = int((time.time() - 3600) * 1000)
    raw.set("obj:k", sign(b"k", pickle.dumps("stale"), "obj:k", signed_at_ms=hour_ago))
    async with RedisObjectStorage(url=redis_url, secret=b"k", max_age=600) as fresh_only:
        with pytest.raises(SignatureError, match="more than max_age=600"):
            await fresh_only.retrieve_with_pickle("k")
        await fresh_only.store_with_pickle("k", "fresh")
        assert await fresh_only.retrieve_with_pickle("k") == "fresh"
    async with RedisObjectStorage(url=redis_url, secret=b"k") as any_age:
        raw.set("obj:k", sign(b"k", pickle.dumps("stale"), "obj:k", signed_at_ms=hour_ago))
        assert await any_age.retrieve_with_pickle("k") == "stale"
    for bad in (0, -1, "60", True):
        with pytest.raises(ValueError, match="max_age"):
            RedisObjectStorage(url=redis_url, max_age=bad)


async def test_secret_key_from_the_environment(redis_url, monkeypatch):
    monkeypatch.setenv("STREAMMACHINE_SECRET_KEY", "shared-across-hosts")
    async with RedisObjectStorage(url=redis_url) as store:
        await store.store_with_pickle("k", 7)
    async with RedisObjectStorage(url=redis_url, secret=b"shared-across-hosts") as same:
        assert await same.retrieve_with_pickle("k") == 7
    assert not (home() / KEY_FILE).exists()  # no key file when the environment names a key


async def test_key_file_is_created_once_private_and_shared(redis_url):
    path = home() / KEY_FILE
    assert not path.exists()
    async with RedisObjectStorage(url=redis_url) as first:
        await first.store_with_pickle("k", "v")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_bytes()
    async with RedisObjectStorage(url=redis_url) as second:
        assert await second.retrieve_with_pickle("k") == "v"
    assert path.read_bytes() == key
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temporary files left


async def test_a_key_file_others_can_read_is_refused(redis_url):
    path = home() / KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("0123456789abcdef")
    path.chmod(0o644)
    async with RedisObjectStorage(url=redis_url) as store:
        with pytest.raises(InsecureKeyFileError, match="chmod 600"):
            await store.store_with_pickle("k", 1)


async def test_list_and_delete_by_pattern_with_scan(storage, raw):
    for i in range(2500):  # more than one SCAN page
        raw.set(f"obj:bulk:{i}", b"x")
    await storage.store_with_pickle("user:1", 1)
    await storage.store_with_pickle("user:2", 2)
    raw.set("user:3", b"outside the prefix")
    raw.set("objection", b"not under 'obj:' either")
    assert await storage.list_keys("user:*") == ["user:1", "user:2"]
    assert len(await storage.list_keys()) == 2502
    assert await storage.delete_keys("bulk:*") == 2500
    assert await storage.list_keys() == ["user:1", "user:2"]
    assert await storage.delete_keys() == 2
    assert raw.exists("user:3", "objection") == 2


async def test_glob_characters_in_the_prefix_are_literal(redis_url, raw):
    async with RedisObjectStorage(url=redis_url, prefix="a[1]*:") as store:
        await store.store_with_pickle("x", 1)
        raw.set("a1zz:y", b"would match an unescaped prefix")
        assert await store.list_keys() == ["x"]
        assert await store.delete_keys() == 1
    assert raw.exists("a1zz:y")


async def test_it_follows_a_shared_connection(redis_url, app_factory):
    app = app_factory("objects")
    store = RedisObjectStorage(connection=app.redis, prefix="app:")
    await store.store_with_pickle("k", {"a": 1})
    async with RedisConnection(url=redis_url) as other:
        assert await RedisObjectStorage(connection=other, prefix="app:").retrieve_with_pickle("k") == {"a": 1}
    await store.close()  # does not close the app's connection
    assert await app.redis.health_check()


async def test_bad_arguments(redis_url):
    with pytest.raises(ValueError, match="not both"):
        RedisObjectStorage(connection=RedisConnection(url=redis_url), url=redis_url)
    async with RedisObjectStorage(url=redis_url) as store:
        for bad in ("", None, 5):
            with pytest.raises(ValueError, match="key="):
                await store.store_with_pickle(bad, 1)
