"""SortedRows: VirtualTable's rows as plain data, kept sorted and filtered as they change, with no Textual in sight.

Rows are keyed; the rows passing the filter are also kept as an ascending list of sort tuples `(value, key)`, so an
upsert of N rows into M is O(N log M) comparisons plus list inserts (bisect), and the row at a display index or the
display index of a key is a lookup. Every upsert of a row bumps its revision, which the table's line cache keys on.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Hashable, Iterable
from typing import Any

SortFn = Callable[[Any, str], Any]
MatchFn = Callable[[Any, Any], bool]


class SortedRows:
    """Keyed rows in display order: sorted by one column (ascending, or reversed), only those passing the filter."""

    def __init__(self, *, sort_value: SortFn, matches: MatchFn, sort_column: str, reverse: bool) -> None:
        self._sort_value = sort_value
        self._matches = matches
        self._data: dict[Hashable, Any] = {}
        self._skey: dict[Hashable, tuple[Any, ...]] = {}  # rows that pass the filter -> their sort tuple
        self._order: list[tuple[Any, ...]] = []  # ascending sort tuples (value, key) of rows passing the filter
        self.sort_column = sort_column
        self.reverse = reverse
        self.filter_value: Any = None  # None: every row; else matches(data, filter_value) decides
        self._revision: dict[Hashable, int] = {}  # bumped on every upsert of a row: part of its line cache key
        self._next_revision = 0

    def __len__(self) -> int:
        """Rows shown (passing the filter)."""
        return len(self._order)

    @property
    def total_count(self) -> int:
        """Rows held, shown or not."""
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def get(self, key: Hashable) -> Any:
        return self._data.get(key)

    def keys(self) -> Iterable[Hashable]:
        return self._data.keys()

    def values(self) -> Iterable[Any]:
        return self._data.values()

    def revision(self, key: Hashable) -> int:
        return self._revision.get(key, 0)

    def key_at(self, index: int) -> Hashable | None:
        n = len(self._order)
        if not 0 <= index < n:
            return None
        return self._order[n - 1 - index if self.reverse else index][-1]

    def index_of(self, key: Hashable) -> int | None:
        t = self._skey.get(key)
        if t is None:
            return None
        i = bisect_left(self._order, t)
        return len(self._order) - 1 - i if self.reverse else i

    def visible_keys(self) -> list[Hashable]:
        """Keys in display order (O(rows))."""
        keys = [t[-1] for t in self._order]
        return keys[::-1] if self.reverse else keys

    def _tuple(self, key: Hashable, data: Any) -> tuple[Any, ...]:
        return (self._sort_value(data, self.sort_column), key)

    def upsert(self, items: list[tuple[Hashable, Any]]) -> None:
        """Add or replace rows by key."""
        if len(items) > 64 and len(items) * 4 > len(self._order):
            for key, data in items:
                self._data[key] = data
                self._next_revision += 1
                self._revision[key] = self._next_revision
            self._rebuild()
            return
        order, skey, data_map = self._order, self._skey, self._data
        for key, data in items:
            old = skey.pop(key, None)
            if old is not None:
                i = bisect_left(order, old)
                if i < len(order) and order[i] is old:
                    del order[i]
                else:  # sort value changed type or compared equal to another: fall back to a scan
                    order.remove(old)
            data_map[key] = data
            self._next_revision += 1
            self._revision[key] = self._next_revision
            if self.filter_value is None or self._matches(data, self.filter_value):
                t = self._tuple(key, data)
                skey[key] = t
                insort(order, t)

    def remove(self, keys: Iterable[Hashable]) -> None:
        for key in keys:
            self._data.pop(key, None)
            self._revision.pop(key, None)
            t = self._skey.pop(key, None)
            if t is not None:
                i = bisect_left(self._order, t)
                if i < len(self._order) and self._order[i] is t:
                    del self._order[i]
                else:
                    self._order.remove(t)

    def clear(self) -> None:
        self._data.clear()
        self._revision.clear()
        self._skey.clear()
        self._order.clear()

    def set_sort(self, column: str, reverse: bool) -> None:
        self.sort_column = column
        self.reverse = reverse
        self._rebuild()

    def set_filter(self, value: Any) -> None:
        """Keep only rows for which matches(data, value) is true; None keeps every row."""
        self.filter_value = value
        self._rebuild()

    def _rebuild(self) -> None:
        value = self.filter_value
        match = self._matches
        tuples = [self._tuple(k, d) for k, d in self._data.items() if value is None or match(d, value)]
        tuples.sort()
        self._order = tuples
        self._skey = {t[-1]: t for t in tuples}
