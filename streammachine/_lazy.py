"""Package attributes imported on first use (PEP 562), so importing a package stays light."""

from __future__ import annotations

from importlib import import_module
from typing import Any, Callable, Dict


def lazy_getattr(package: str, names: Dict[str, str], namespace: Dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``names[attr]`` (a submodule of ``package``) when ``attr`` is first used."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f".{module}", package), name)
        namespace[name] = value  # later lookups skip this function
        return value

    return __getattr__
