"""One registry per pluggable family. A new policy is one file with ``@REGISTRY.register`` plus one
import line in its family's ``__init__``; the contract tests iterate the registry, so it is checked
automatically.

Third-party packages add plug-ins through a Python entry point in the family's group (``moesim.caches``,
``moesim.predictors``, ``moesim.miss``; see docs/plugins.md). A registry fills itself on first use,
in whatever process asks (the CLI, a sweep's pool or Ray worker, a notebook), so workers never need
to be told about plug-ins: the built-in family package first, then the installed entry points once a
name is not built in or the whole family is listed. A plug-in that cannot be loaded is remembered
with its one-line error, shown by ``moesim list`` and raised only when a scenario asks for it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from moesim.errors import fail

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """A registered plug-in: its class and where it came from (``moesim`` or ``package version``)."""

    name: str
    cls: type
    source: str


@cache
def _installed_entry_points() -> Any:
    # One scan of the installed distributions serves every family (a scan costs ~0.1-0.3 s).
    return entry_points()


def _entry_points(group: str) -> list[EntryPoint]:
    return sorted(_installed_entry_points().select(group=group), key=lambda e: e.name)


class Registry(Generic[T]):
    def __init__(self, family: str, scenario_key: str, builtins: str = "", group: str = ""):
        self.family = family
        self.scenario_key = scenario_key  # named in error messages
        self.builtins = builtins  # the package whose import registers the built-in plug-ins
        self.group = group  # the entry-point group third-party plug-ins register under
        self._items: dict[str, type[T]] = {}
        self._sources: dict[str, str] = {}
        self._broken: dict[str, str] = {}  # entry-point name -> why it could not be loaded
        self._builtins_loaded = False
        self._loaded = False  # entry points scanned

    def register(self, cls: type[T], source: str = "moesim") -> type[T]:
        name = cls.name  # type: ignore[attr-defined]
        if name in self._items:
            raise ValueError(f"{self.family} {name!r} registered twice")
        self._items[name] = cls
        self._sources[name] = source
        return cls

    def _ensure(self, plugins: bool = True) -> None:
        """Register the built-in plug-ins and, with ``plugins``, the installed entry points (scanning
        the installed packages costs ~0.1-0.3 s, so a lookup of a built-in name skips it)."""
        if not self._builtins_loaded:
            self._builtins_loaded = True
            if self.builtins:
                importlib.import_module(self.builtins)
        if plugins and not self._loaded:
            self._loaded = True
            for ep in _entry_points(self.group) if self.group else ():
                self._load_entry_point(ep)

    def _load_entry_point(self, ep: EntryPoint) -> None:
        dist = getattr(ep, "dist", None)
        source = f"{dist.name} {dist.version}" if dist is not None else "unknown package"
        where = f"entry point {ep.name!r} = {ep.value!r} in group {self.group} ({source})"
        try:
            cls = ep.load()
        except Exception as exc:  # any import-time failure of foreign code is reported, not raised
            self._broken[ep.name] = f"{where}: cannot be loaded ({type(exc).__name__}: {exc})"
            return
        name = getattr(cls, "name", None)
        if not isinstance(cls, type) or not isinstance(name, str) or not name:
            self._broken[ep.name] = f"{where}: is not a {self.family} class with a name"
        elif name in self._items and self._items[name] is not cls:
            self._broken[ep.name] = (
                f"{where}: {self.family} {name!r} is already provided by {self._sources[name]}"
            )
        elif name not in self._items:
            self.register(cls, source)

    def get(self, name: str) -> type[T]:
        self._ensure(plugins=False)
        if name not in self._items:
            self._ensure()
        if name in self._items:
            return self._items[name]
        if name in self._broken:
            fail(f"{self.scenario_key}={name}: {self._broken[name]}")
        fail(f"{self.scenario_key}: unknown {self.family} {name!r}; choose one of: {', '.join(self.names())}")
        raise AssertionError  # unreachable

    def names(self) -> list[str]:
        self._ensure()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self._ensure()
        return name in self._items

    def items(self) -> list[tuple[str, type[T]]]:
        self._ensure()
        return sorted(self._items.items())

    def entries(self) -> list[Entry]:
        """Every registered plug-in with its source package, for ``moesim list``."""
        self._ensure()
        return [Entry(n, c, self._sources[n]) for n, c in sorted(self._items.items())]

    def broken(self) -> dict[str, str]:
        """Entry points that could not be loaded, by name, with the reason."""
        self._ensure()
        return dict(self._broken)
