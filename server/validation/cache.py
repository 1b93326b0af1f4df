"""What the validator learnt from a file's content, kept for the next run.

Opening a stored file is the dear part of a run (key unwrap, decryption,
authentication), and a submission is judged again after every upload
while nearly all of its files are unchanged. :class:`ContentCache` keeps
the results that depend on a file's content alone (its sniffed kind, the
missing columns of a 基本信息表, the links of a docx report), so that an
unchanged file is not opened again.

Trusts: the source's identity of a file, ``SourceEntry.version`` together
with ``SourceEntry.sha256``. The storage layer gives each committed upload
a fresh version id and never rewrites it (a rename keeps the version, an
overwrite makes a new one), and the version index holds the SHA-256 of its
plaintext. Sources that cannot vouch for an identity (a plain directory)
give none, and their files are always opened. Whether the stored bytes are
still intact is not checked again: the storage layer does so on every
download.

Guarantees: a result is reused only under the same identity and the same
inputs of the check that made it (the caller puts those in the key: the
extension, the size, the container limits, the checklist's rules for the
table). What depends on the file's name, place or item, on other files or
on the date of the run is never cached, only recomputed from the cached
content facts. A failed check (an exception) is not remembered. Memory is
bounded: least recently used entries go once the estimated footprint
passes ``max_bytes``. Safe to share between threads (two prefectures may
be judged at once).
"""

from __future__ import annotations

import collections
import sys
import threading
from collections.abc import Callable
from collections.abc import Hashable
from typing import TypeVar
from typing import cast

from .tree import Node

DEFAULT_MAX_BYTES = 64 << 20
# Bookkeeping per entry beyond key and value: the ordered dict's link and
# slot, the key tuple. Measured roughly; it only steers the bound.
ENTRY_OVERHEAD = 200

T = TypeVar("T")


class ContentCache:
    """Results about file contents, least recently used out first.

    Options: ``max_bytes`` (64 MiB) bounds the estimated footprint of keys
    and values together.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._entries: collections.OrderedDict[Hashable, tuple[object, int]] = (
            collections.OrderedDict()
        )
        self._footprint = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def footprint(self) -> int:
        """Estimated bytes held by keys and values."""
        return self._footprint

    def recall(self, key: Hashable, make: Callable[[], T]) -> T:
        """The value kept under ``key``, or ``make()``'s, kept from now on.

        ``make`` runs outside the lock: two threads missing the same key
        both compute it, which is harmless (the results are equal).
        """
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return cast(T, found[0])
            self.misses += 1
        value = make()
        self._keep(key, value)
        return value

    def _keep(self, key: Hashable, value: object) -> None:
        size = ENTRY_OVERHEAD + _key_bytes(key) + _value_bytes(value)
        if size > self.max_bytes:
            return  # larger than the whole cache: not worth keeping
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._footprint -= old[1]
            self._entries[key] = (value, size)
            self._footprint += size
            while self._footprint > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._footprint -= dropped


def content_key(node: Node) -> tuple[str, str] | None:
    """The identity of ``node``'s content, or None when the source gave none."""
    if node.version is None or node.sha256 is None:
        return None
    return node.version, node.sha256


def _key_bytes(key: Hashable) -> int:
    """The strings of a key: other parts (limits, rules) are shared."""
    if not isinstance(key, tuple):
        return sys.getsizeof(key)
    strings = (part for part in key if isinstance(part, str))
    return sys.getsizeof(key) + sum(map(sys.getsizeof, strings))


def _value_bytes(value: object) -> int:
    """A rough size: tuples with what they hold, a value with its strings."""
    if isinstance(value, tuple):
        return sys.getsizeof(value) + sum(map(_value_bytes, value))
    size = sys.getsizeof(value)
    for name in getattr(type(value), "__slots__", ()):
        part = getattr(value, name, None)
        if isinstance(part, str):
            size += sys.getsizeof(part)
    return size
