"""Connections per client address, counted across server worker processes.

pyftpdlib counts a listener's connections per address in ``ip_map``, a
list; with several worker processes each would count only its own. Here
each worker mirrors its list into a table in memory shared by all of them
(an anonymous mapping the supervisor makes before it forks), and the
count covers every worker.

Trusts: the workers, which each write only their own region. Guarantees:
the limit can refuse one connection too many when two workers admit an
address at once, never admit one too many.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import struct

logger = logging.getLogger(__name__)

ENTRY = struct.Struct("=8sI")  # address digest, connections
EMPTY = bytes(8)


class SharedAddressCounts:
    """Connections per client address, per worker, in shared memory.

    Made by the parent before the fork (an anonymous shared mapping). Each
    worker writes only its own region, on its loop thread; every worker
    reads all regions. A worker adds a connection before it counts, so two
    workers admitting one address at once both see both connections: the
    limit can refuse one too many, never admit one too many.
    """

    def __init__(self, workers: int, entries: int) -> None:
        self.workers = workers
        self.entries = entries
        self._region = entries * ENTRY.size
        self._memory = mmap.mmap(-1, workers * self._region)

    def view(self, slot: int) -> AddressMap:
        return AddressMap(self, slot)

    def clear(self, slot: int) -> None:
        """Forget a dead worker's connections (by the parent, before its
        successor starts)."""
        start = slot * self._region
        self._memory[start : start + self._region] = bytes(self._region)

    def total(self, digest: bytes) -> int:
        found = 0
        for slot in range(self.workers):
            index = self._find(slot, digest)
            if index is not None:
                found += self._read(slot, index)[1]
        return found

    def add(self, slot: int, digest: bytes, change: int) -> None:
        index = self._find(slot, digest)
        if index is None:
            if change < 0:
                return
            index = self._find(slot, EMPTY)
            if index is None:  # more addresses than connections: not reached
                logger.error("address table full worker=%d", slot)
                return
            count = 0
        else:
            count = self._read(slot, index)[1]
        count = max(0, count + change)
        self._write(slot, index, digest if count else EMPTY, count)

    def _find(self, slot: int, digest: bytes) -> int | None:
        start = slot * self._region
        for index in range(self.entries):
            offset = start + index * ENTRY.size
            if self._memory[offset : offset + 8] == digest:
                return index
        return None

    def _read(self, slot: int, index: int) -> tuple[bytes, int]:
        offset = slot * self._region + index * ENTRY.size
        digest, count = ENTRY.unpack_from(self._memory, offset)
        return digest, int(count)

    def _write(self, slot: int, index: int, digest: bytes, count: int) -> None:
        offset = slot * self._region + index * ENTRY.size
        ENTRY.pack_into(self._memory, offset, digest, count)


class AddressMap(list[str]):
    """pyftpdlib's ``FTPServer.ip_map`` (append, count, remove), mirrored
    into the shared counts so that ``count`` covers every worker."""

    def __init__(self, shared: SharedAddressCounts, slot: int) -> None:
        super().__init__()
        self.shared = shared
        self.slot = slot

    def append(self, address: str) -> None:
        super().append(address)
        self.shared.add(self.slot, _digest(address), 1)

    def remove(self, address: str) -> None:
        super().remove(address)
        self.shared.add(self.slot, _digest(address), -1)

    def count(self, address: str) -> int:
        return self.shared.total(_digest(address))


def _digest(address: str) -> bytes:
    digest = hashlib.blake2b(address.encode(), digest_size=8).digest()
    return digest if digest != EMPTY else b"\x01" + digest[1:]
