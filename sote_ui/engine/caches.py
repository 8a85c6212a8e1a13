"""A small least-recently-used cache: the engine keeps prompt encodings, priors and image embeddings in these."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable


class LruCache:
    """At most ``size`` values; a hit makes its value the newest, and the oldest goes when it is full."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict = OrderedDict()

    def get(self, key: Hashable) -> Any | None:
        """The value for ``key`` (now the newest), or None."""
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: Hashable, value: Any) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def values(self) -> list:
        """The values, oldest first."""
        return list(self._items.values())

    def clear(self) -> None:
        self._items.clear()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)
