"""Compiled modules and their Python twins: which one serves when a build is missing or out of date."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# A compiled module built from other sources than the ones beside it fails at import with Cython's ValueError
# ("size changed, may indicate binary incompatibility"); this finder makes every compiled module fail that way.
STALE_BUILD = textwrap.dedent(
    """\
    import sys, warnings
    from importlib.abc import MetaPathFinder

    COMPILED = {"_decode", "_windows", "_ohlc"}

    class Stale(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.startswith("streammachine._speedups.") and name.rsplit(".", 1)[1] in COMPILED:
                raise ValueError(f"{name}: a struct size changed, may indicate binary incompatibility")
            return None

    sys.meta_path.insert(0, Stale())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import streammachine
        from streammachine import FastOHLC
        from streammachine.windows import Count, Sum, Window, window_state_class

    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 3 and all("out of date" in m and "build_ext --inplace" in m for m in messages), messages
    assert not streammachine._has_cython_decode
    assert window_state_class().compiled is False and FastOHLC.compiled is False
    assert streammachine.decode_dict_bytes_to_utf8({b"a": b"1"}) == {"a": "1"}
    state = Window.tumbling(60_000, key="k").agg(n=Count(), qty=Sum("qty")).start()
    assert state.compiled is False
    entries = [(f"{t}-0", {"k": "a", "qty": "2"}) for t in (1_000, 2_000, 61_000)]
    rows = state.add_entries(entries, stream="s")
    assert [(row["key"], row["n"], row["qty"]) for row in rows] == [("a", 2, 4.0)], rows
    candles = FastOHLC([60_000])
    print("python twins serve", type(candles).__name__)
    """
)


def test_an_out_of_date_build_falls_back_to_the_python_twins_with_a_warning():
    done = subprocess.run([sys.executable, "-c", STALE_BUILD], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "python twins serve" in done.stdout
