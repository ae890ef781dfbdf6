"""Every shipped notebook, run twice from the top against one server, gives the same outcome (#16).

A notebook that reuses the streams and groups of its earlier run meets its
entries again (pending ones, old candles, longer streams): the second run's
output differs, or its assertions fail. Each run is a fresh kernel (nbclient)
on the same server, like "Restart and Run All" twice.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
OWN = ["01-quickstart", "02-market-data", "03-hot-reload", "04-mcp", "05-stages-and-state", "07-backtest-to-live"]


def _outcome(cell) -> tuple:
    """What a cell showed: errors and printed lines in full, displayed values by their first line (a table's
    header); numbers, addresses and run ids left out (rates, timings and random prices differ between runs)."""
    shown = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "error":
            shown.append(f"error {output['ename']}: {output['evalue']}")
        elif output["output_type"] == "stream" and output["name"] == "stdout":  # libraries' logs vary
            shown.append(f"{output['name']}: {output['text']}")
        elif "application/vnd.jupyter.widget-view+json" in output.get("data", {}):
            shown.append("widget")
        elif "text/plain" in output.get("data", {}):
            shown.append(output["data"]["text/plain"].strip().split("\n")[0])
    text = re.sub(r"0x[0-9a-f]+|\b[0-9a-f]{8}\b", "<hex>", "\n".join(shown))
    text = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "#", text)
    return tuple(re.sub(r"[ \t]+", " ", line).strip() for line in text.split("\n"))


def _run(path: Path, env: dict, cwd: Path) -> list:
    notebook = nbformat.read(path, as_version=4)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the kernel inherits the environment it is started with
    try:
        NotebookClient(
            notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
        ).execute()
    except CellExecutionError as exc:
        raise AssertionError(f"{path.name} failed: {str(exc)[-3000:]}") from None
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return [_outcome(cell) for cell in notebook.cells if cell.cell_type == "code"]


@pytest.mark.parametrize("name", OWN)
def test_a_notebook_run_twice_from_the_top_gives_the_same_outcome(name, private_server, tmp_path):
    env = dict(os.environ, REDIS_URL=private_server.url, STREAMMACHINE_HOME=str(tmp_path / "smhome"))
    path = NOTEBOOKS / f"{name}.ipynb"
    first = _run(path, env, tmp_path)
    second = _run(path, env, tmp_path)
    differ = [(i, a, b) for i, (a, b) in enumerate(zip(first, second)) if a != b]
    assert not differ, f"{name}: code cells that showed something else the second time: {differ}"
