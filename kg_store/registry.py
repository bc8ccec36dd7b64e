"""A small string resolver, one per pluggable family (PyKEEN's ClassResolver, PyG's resolver).

Names are normalised (case, '-', '_', spaces); unknown names raise `UnknownNameError` (a
`ConfigError`, so every CLI reports it in one line with exit 2) that lists the valid choices. Entries register with a decorator; duplicates are refused.
"""
from __future__ import annotations

from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


def normalize(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


class Registry(Generic[T]):
    def __init__(self, family: str):
        self.family = family
        self._entries: dict[str, T] = {}
        self._names: dict[str, str] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            for n in (name, *aliases):
                key = normalize(n)
                if key in self._entries:
                    raise ValueError(f"{self.family} {n!r} is registered twice")
                self._entries[key] = obj
            self._names[name] = name
            return obj
        return deco

    def get(self, name: str) -> T:
        key = normalize(name)
        if key not in self._entries:
            from mmkg.kg_store.errors import UnknownNameError
            raise UnknownNameError(f"unknown {self.family} {name!r}; choose one of: {', '.join(sorted(self._names))}")
        return self._entries[key]

    def make(self, name: str, /, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)  # type: ignore[operator]

    def __contains__(self, name: str) -> bool:
        return normalize(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._names))

    def names(self) -> list[str]:
        return sorted(self._names)

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._entries[normalize(n)]) for n in self.names()]


#: every registry created through `Registry` that wants to be listed by `mmkg ls`
ALL: dict[str, Registry[Any]] = {}


def family(name: str) -> Registry[Any]:
    """Create (or return) the named registry and list it for `mmkg ls`."""
    if name not in ALL:
        ALL[name] = Registry(name)
    return ALL[name]
