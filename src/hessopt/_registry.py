"""A name -> item registry shared by the method and problem registries.

:mod:`hessopt.bench.methods` and :mod:`hessopt.problems.registry` each keep one :class:`Registry` and
expose thin module-level functions over it. This module is a leaf: it imports nothing of hessopt, so that
``problems`` and ``bench`` can both use it without importing each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["Named", "Registry"]


class Named(Protocol):
    """Anything with a ``name`` (the registry key)."""

    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)

_MISSING: Any = object()


class Registry(Generic[T]):
    """Items keyed by their ``name``, in registration order.

    ``noun`` names one item in the duplicate-registration error (``"method 'x' is already registered;
    ..."``); ``lookup_noun`` (default ``noun``) and ``known_label`` (default ``"known {noun}s"``) word the
    unknown-name error of :meth:`get` (``"unknown {lookup_noun} 'x'; {known_label}: a, b"``).

    Besides the checked :meth:`register`, the item mapping supports ``in``, ``len``, iteration over the
    names, ``registry[name]`` (KeyError when absent), and ``registry[name] = item`` / ``del registry[name]``
    (unchecked overwrite and removal, e.g. for ``pytest``'s ``monkeypatch.setitem``). All operations are
    O(1) except :meth:`names`, :meth:`all` and the unknown-name message, which are O(number of items).
    """

    def __init__(self, noun: str, *, lookup_noun: str | None = None, known_label: str | None = None) -> None:
        if not isinstance(noun, str) or not noun:
            raise ValueError(f"noun must be a non-empty string, got {noun!r}")
        self._noun = noun
        self._lookup_noun = noun if lookup_noun is None else lookup_noun
        self._known_label = f"known {noun}s" if known_label is None else known_label
        self._items: dict[str, T] = {}

    def register(self, item: T, *, replace: bool = False) -> T:
        """Add an item under its name and return it.

        Add ``item`` under ``item.name`` and return it; ``replace=True`` overwrites an entry of the same
        name (keeping its position in the order), otherwise a duplicate name raises ValueError.
        """
        if item.name in self._items and not replace:
            raise ValueError(
                f"{self._noun} {item.name!r} is already registered; pass replace=True to overwrite it"
            )
        self._items[item.name] = item
        return item

    def get(self, name: str, default: Any = _MISSING) -> T:
        """The item called ``name``.

        When absent: ``default`` if one is given, else ValueError naming ``name`` and listing the registered
        names.
        """
        try:
            return self._items[name]
        except KeyError:
            if default is not _MISSING:
                return default
            raise ValueError(
                f"unknown {self._lookup_noun} {name!r}; {self._known_label}: {', '.join(self._items)}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._items)

    def all(self) -> list[T]:
        """Registered items, in registration order."""
        return list(self._items.values())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __setitem__(self, name: str, item: T) -> None:
        if name != item.name:
            raise ValueError(f"key {name!r} must equal the {self._noun}'s name {item.name!r}")
        self._items[name] = item

    def __delitem__(self, name: str) -> None:
        del self._items[name]

    def __repr__(self) -> str:
        return f"Registry({self._noun!r}, names={self.names()!r})"
