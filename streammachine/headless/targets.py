"""Finding the App to run: ``app.py``, ``package.module:app`` or ``notebook.ipynb``.

``load_app(target)`` (a coroutine: notebook cells may use top-level
``await``, and must run on the loop the app will run on) imports the target
and returns its ``App``:

- ``path/to/app.py[:attr]``: the file is imported as a module named after it
  (its folder goes first on ``sys.path``, as ``python app.py`` does). Code
  under ``if __name__ == "__main__":`` does not run, so ``app.start()``
  there is harmless.
- ``package.module[:attr]``: imported from ``sys.path`` (the current folder
  first).
- ``notebook.ipynb[:attr]``: the code cells run in order, in one namespace,
  as a kernel would run them (``__name__ == "__main__"``). Magics are
  translated or skipped, see ``translate_cell``; cells tagged
  ``skip-headless`` are skipped.

``attr`` names the App (dotted for nested attributes; a zero-argument
factory is called). Without it: the variable ``app`` if it is an App, else
the one App in the module.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from streammachine.app import App

log = logging.getLogger("streammachine.headless.targets")

EXPECTED = "expected a Python file (app.py), a module (package.module[:attr]) or a notebook (notebook.ipynb)"
USE_VARIABLE = "__streammachine_use__"  # where `%streammachine use NAME` is remembered
START_FUNCTION = "__streammachine_start__"  # what `%streammachine start` calls
SKIP_TAGS = frozenset({"skip-headless", "streammachine-skip"})
# Cell magics whose body is plain Python that should still run headless.
_PASS_THROUGH_CELL_MAGICS = frozenset({"time", "capture", "prun"})
# Line magics whose argument is a Python statement to keep.
_STATEMENT_LINE_MAGICS = frozenset({"time"})
# Bare calls at the top level of a cell that only draw something in a notebook.
DISPLAY_ONLY_CALLS = frozenset({"display", "dashboard", "live_line", "live_candles", "live_table"})
_MAGIC_LINE = re.compile(r"^(\s*)(%|!(?!=))(.*)$")  # a line magic or shell escape (not a `!=` continuation)


class TargetError(Exception):
    """The target cannot be found, imported, or holds no usable App."""


@dataclass(frozen=True)
class TargetSpec:
    kind: str  # "script" | "module" | "notebook"
    location: str  # a path or a dotted module name
    attr: Optional[str] = None

    @property
    def display_name(self) -> str:
        return self.location + (f":{self.attr}" if self.attr else "")


def parse_target(target: str) -> TargetSpec:
    """Classify ``target``; raises TargetError for an empty or missing one."""
    if not target or not target.strip():
        raise TargetError(f"target {target!r}: {EXPECTED}")
    location, attr = target, None
    head, sep, tail = target.rpartition(":")
    if sep and head and re.fullmatch(r"[A-Za-z_][\w.]*", tail):
        location, attr = head, tail
    if location.endswith(".ipynb"):
        kind = "notebook"
    elif location.endswith(".py") or os.sep in location or "/" in location:
        kind = "script"
    else:
        kind = "module"
    if kind != "module" and not Path(location).is_file():
        raise TargetError(f"target {target!r}: no such file {location!r}; {EXPECTED}")
    if kind == "module" and not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", location):
        raise TargetError(f"target {target!r}: {location!r} is not a module name nor an existing file; {EXPECTED}")
    return TargetSpec(kind, location, attr)


async def load_app(target: str | TargetSpec) -> App:
    """Import the target and return its App (not started)."""
    spec = parse_target(target) if isinstance(target, str) else target
    if spec.kind == "script":
        namespace = vars(_import_script(Path(spec.location)))
    elif spec.kind == "module":
        namespace = vars(_import_module(spec.location))
    else:
        namespace = await run_notebook(Path(spec.location))
        if spec.attr is None and namespace.get(USE_VARIABLE):
            spec = TargetSpec(spec.kind, spec.location, namespace[USE_VARIABLE])
    return find_app(namespace, spec)


def find_app(namespace: dict, spec: TargetSpec) -> App:
    if spec.attr:
        value: Any = namespace
        for part in spec.attr.split("."):
            try:
                value = value[part] if isinstance(value, dict) else getattr(value, part)
            except (KeyError, AttributeError):
                raise TargetError(
                    f"target {spec.display_name!r}: no attribute {spec.attr!r} in {spec.location!r}"
                ) from None
        if not isinstance(value, App) and callable(value):
            value = value()
        if not isinstance(value, App):
            raise TargetError(
                f"target {spec.display_name!r}: {spec.attr!r} is a {type(value).__name__}, expected a streammachine.App"
            )
        return value
    if isinstance(namespace.get("app"), App):
        return namespace["app"]
    found = {name: value for name, value in namespace.items() if isinstance(value, App) and not name.startswith("_")}
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        raise TargetError(
            f"target {spec.display_name!r}: no streammachine.App found; define `app = App(...)` "
            f"or name it as {spec.location}:ATTRIBUTE"
        )
    raise TargetError(
        f"target {spec.display_name!r}: several Apps ({', '.join(sorted(found))}); choose one as {spec.location}:NAME"
    )


def _import_script(path: Path):
    path = path.resolve()
    name = path.stem if path.stem.isidentifier() and path.stem not in sys.modules else "__streammachine_target__"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise TargetError(f"target {str(path)!r}: cannot be imported as Python; {EXPECTED}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _import_module(name: str):
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise TargetError(f"target {name!r}: no module named {exc.name!r}; {EXPECTED}") from None
        raise


# --- notebooks ---------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    index: int  # 1-based among all cells, as Jupyter shows them
    source: str
    tags: frozenset


def read_notebook(path: Path) -> list[Cell]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        cells = document["cells"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TargetError(f"notebook {str(path)!r} cannot be read as .ipynb JSON: {exc}") from None
    out = []
    for index, cell in enumerate(cells, start=1):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        tags = frozenset(cell.get("metadata", {}).get("tags", []) or [])
        out.append(Cell(index, source, tags))
    return out


def translate_cell(source: str) -> Optional[str]:
    """A notebook cell as plain Python for a headless run, or None to skip it.

    - ``%%streammachine agent|timer ...`` cells are kept (``run_notebook``
      registers them through the notebook extension's own cell magic).
    - ``%%time``, ``%%capture`` and ``%%prun`` run their body; any other
      cell magic (``%%html``, ``%%bash``, ``%%writefile``...) skips the cell.
    - ``%streammachine start`` starts the app there (later cells may wait
      for its results, as in the kernel); ``%streammachine use NAME``
      chooses the App. Other line magics and shell escapes (``%load_ext``,
      ``%streammachine stop|send|status``, ``!pip install``) become ``pass``:
      the runner owns the app's lifecycle. ``%time stmt`` keeps ``stmt``.
    - Top-level ``display(...)``, ``x.dashboard()``, ``live_line(...)``,
      ``live_candles(...)`` and ``live_table(...)`` calls are dropped: they
      only draw in a notebook.
    """
    stripped = source.lstrip()
    if stripped.startswith("%%"):
        first, _, body = stripped.partition("\n")
        magic = first[2:].split(None, 1)[0] if first[2:].strip() else ""
        if magic == "streammachine":
            return source
        if magic not in _PASS_THROUGH_CELL_MAGICS:
            log.info("skipping a %%%%%s cell (not Python)", magic)
            return None
        source = body
    lines = []
    for line in source.splitlines():
        match = _MAGIC_LINE.match(line)
        if match is None:
            lines.append(line)
            continue
        indent, kind, rest = match.groups()
        words = rest.split() if kind == "%" else []
        if words[:1] and words[0] in _STATEMENT_LINE_MAGICS and len(words) > 1:
            lines.append(indent + rest.split(None, 1)[1])
        elif words[:2] == ["streammachine", "use"] and len(words) == 3:
            lines.append(f"{indent}{USE_VARIABLE} = {words[2]!r}")
        elif words == ["streammachine", "start"]:
            lines.append(f"{indent}await {START_FUNCTION}()")
        else:
            lines.append(indent + "pass")
    return _drop_display_calls("\n".join(lines))


def _drop_display_calls(source: str) -> str:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source  # let compile() report it with the cell number
    drop = []
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            func = node.value.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if name in DISPLAY_ONLY_CALLS:
                drop.append(node)
    if not drop:
        return source
    lines = source.splitlines()
    for node in drop:
        for lineno in range(node.lineno - 1, node.end_lineno or node.lineno):
            lines[lineno] = ""
        lines[node.lineno - 1] = " " * node.col_offset + "pass"
    return "\n".join(lines)


def _display(*objects: Any, **kwargs: Any) -> None:
    """Headless stand-in for IPython's display(): draws nothing."""


async def run_notebook(path: Path) -> dict:
    """Run a notebook's code cells headless; returns the namespace they built."""
    namespace: dict = {"__name__": "__main__", "__file__": str(path.resolve()), "display": _display}

    async def start_app() -> None:
        await _cell_app(namespace, f"notebook {path.name!r}").ensure_running()

    namespace[START_FUNCTION] = start_app
    if str(path.resolve().parent) not in sys.path:
        sys.path.insert(0, str(path.resolve().parent))
    for cell in read_notebook(path):
        if cell.tags & SKIP_TAGS:
            log.info("notebook %s: cell %d skipped (tagged %s)", path.name, cell.index, sorted(cell.tags & SKIP_TAGS))
            continue
        source = translate_cell(cell.source)
        if source is None or not source.strip():
            continue
        where = f"notebook {path.name!r}, cell {cell.index}"
        try:
            filename = f"<{path.name} cell {cell.index}>"
            if source.lstrip().startswith("%%streammachine"):
                _register_streammachine_cell(source.lstrip(), namespace, where, filename)
                continue
            code = compile(source, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            result = eval(code, namespace)
            if inspect.isawaitable(result):
                await result
        except TargetError:
            raise
        except SyntaxError as exc:
            raise TargetError(f"{where}: syntax error at line {exc.lineno}: {exc.msg}") from None
        except Exception as exc:
            log.error("%s failed", where, exc_info=True)
            raise TargetError(
                f"{where} raised {type(exc).__name__}: {exc} (tag the cell 'skip-headless' "
                "to leave it out of headless runs)"
            ) from exc
    return namespace


def _cell_app(namespace: dict, where: str) -> App:
    return find_app(namespace, TargetSpec("notebook", where, namespace.get(USE_VARIABLE)))


def _register_streammachine_cell(source: str, namespace: dict, where: str, filename: str) -> None:
    """``%%streammachine agent|timer ...``: the body becomes a handler, exactly as the notebook magic does it."""
    from streammachine.cells import MagicArgumentError, cell_registration

    first, _, body = source.partition("\n")
    app = _cell_app(namespace, where)
    try:
        line = first[len("%%streammachine") :].strip()
        registration = cell_registration(app, line, translate_cell(body) or "pass", namespace, filename)
        registration.register()
    except (MagicArgumentError, TypeError, ValueError) as exc:
        raise TargetError(f"{where}: {exc}") from None
    log.info("%s: registered %s", where, registration.description)
