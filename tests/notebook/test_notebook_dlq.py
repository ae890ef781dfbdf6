"""`%streammachine dlq ...` in a real kernel: dead letters listed, the cell handler fixed, replayed once each."""

from __future__ import annotations

import pytest

from tests.helpers import wait_until_sync
from tests.notebook.test_notebook_kernel import kernel  # noqa: F401  (the fixture: a live ipykernel on the test's Redis)

pytestmark = pytest.mark.timeout(120)


def test_dlq_magic_lists_replays_after_a_hot_swap_and_purges(kernel, sync_redis):  # noqa: F811
    kernel.run("""
%load_ext streammachine
app = App("dlq", consumer_config=ConsumerConfig(block_ms=50, count=20, max_deliveries=1))
handled = []
""")
    kernel.run("""%%streammachine agent bills --group billing --name biller
if message.message["kind"] == "bad":
    raise ValueError("bad bill " + message.message["n"])
handled.append(message.message["n"])
""")
    kernel.run("%streammachine start")
    kernel.run("await until(lambda: app.is_running, 20)")
    for n in range(12):
        sync_redis.xadd("bills", {"n": n, "kind": "bad" if n % 3 == 0 else "ok"})
    wait_until_sync(lambda: sync_redis.xlen("bills:dead") == 4, 20, what="the 4 bad bills dead-lettered")

    kernel.run("letters = %streammachine dlq list bills")
    assert kernel.value("sorted(letters['error'])") == [f"ValueError: bad bill {n}" for n in (0, 3, 6, 9)]
    assert kernel.value("letters['fields'].iloc[0]") == {"n": "0", "kind": "bad"}
    first = kernel.value("letters.index[0]")
    kernel.run(f"shown = %streammachine dlq show bills {first}")
    assert kernel.value("(shown.original_id, shown.error)") == (
        sync_redis.xrange("bills")[0][0],
        "ValueError: bad bill 0",
    )

    with pytest.raises(AssertionError, match="add --yes"):
        kernel.run("%streammachine dlq replay bills --all")
    with pytest.raises(AssertionError, match="give exactly one of IDs, --all"):
        kernel.run("%streammachine dlq replay bills --yes")
    with pytest.raises(AssertionError, match="'bills:dead' has no entry 1-0"):
        kernel.run("%streammachine dlq replay bills 1-0 --yes")
    assert sync_redis.xlen("bills:dead") == 4

    kernel.run("""%%streammachine agent bills --group billing --name biller
handled.append(message.message["n"])
""")  # the fix, hot-swapped in
    kernel.run("await until(lambda: app.last_swap_ms is not None, 10)")
    assert "replayed 3 dead letter(s) from bills:dead" in kernel.run(
        "%streammachine dlq replay bills " + " ".join(e for e, _ in sync_redis.xrange("bills:dead")[:3]) + " --yes"
    )
    kernel.run("await until(lambda: len(handled) == 11, 10)")
    assert sorted(kernel.value("handled"), key=int) == [str(n) for n in range(12) if n != 9], "each once"
    assert "purged 1 dead letter(s) from bills:dead" in kernel.run("%streammachine dlq purge bills --all --yes")
    assert sync_redis.xlen("bills:dead") == 0
