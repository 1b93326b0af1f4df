"""The digest of what a download served: from the index only for every
authenticated byte from offset 0, computed from the bytes otherwise."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest

from censusdrop.server.storage.store import Storage
from censusdrop.server.storage.streams import DIGEST_COMPUTED
from censusdrop.server.storage.streams import DIGEST_FROM_INDEX
from censusdrop.server.storage.streams import DIGEST_UNAVAILABLE
from censusdrop.server.storage.streams import Download
from conftest import Instance
from conftest import open_storage

AREA = "420100"
CHUNK = 64 * 1024
DATA = os.urandom(5 * CHUNK + 1234)


@pytest.fixture
def storage(sqlite_instance: Instance) -> Iterator[Storage]:
    with open_storage(sqlite_instance, AREA) as store:
        store.write_bytes(AREA, "a.bin", DATA, "wuhan")
        yield store


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_all(handle: Download) -> bytes:
    parts = []
    while part := handle.read(CHUNK):
        parts.append(part)
    handle.read(CHUNK)  # as pyftpdlib's producer does, to see the end
    return b"".join(parts)


def test_every_byte_from_zero_is_served_with_the_index_digest(storage) -> None:
    handle = storage.open_read(AREA, "a.bin")
    handle.trust_index()
    assert _read_all(handle) == DATA
    handle.close()

    served = handle.served(len(DATA), complete=True)
    handle.release()
    assert served is not None
    assert served.source == DIGEST_FROM_INDEX
    current = storage.current_version(AREA, "a.bin")
    assert served.sha256 == _sha256(DATA) == current.sha256


def test_a_cut_short_download_is_read_again_for_the_bytes_sent(storage) -> None:
    handle = storage.open_read(AREA, "a.bin")
    handle.trust_index()
    handle.read(CHUNK)
    handle.read(CHUNK)
    handle.close()  # stays open underneath for served_again
    sent = CHUNK + 1000  # the rest of what was read never left the server

    assert handle.served(sent, complete=False) is None
    served = handle.served_again(sent)
    assert served.source == DIGEST_COMPUTED
    assert served.sha256 == _sha256(DATA[:sent])
    with pytest.raises(ValueError):
        handle.tell()  # released


def test_a_complete_flag_without_every_byte_is_not_taken_from_the_index(
    storage,
) -> None:
    handle = storage.open_read(AREA, "a.bin")
    handle.trust_index()
    handle.read(CHUNK)
    assert handle.served(CHUNK, complete=True) is None
    assert handle.served_again(CHUNK).sha256 == _sha256(DATA[:CHUNK])


def test_a_resumed_download_is_hashed_as_it_is_read(storage) -> None:
    handle = storage.open_read(AREA, "a.bin")
    handle.trust_index()
    handle.seek(100_000)
    rest = _read_all(handle)
    handle.close()

    served = handle.served(len(rest), complete=True)
    handle.release()  # what the server does once it has the digest
    assert served is not None
    assert served.source == DIGEST_COMPUTED
    assert served.sha256 == _sha256(DATA[100_000:]) == _sha256(rest)


def test_without_trust_every_read_is_hashed(storage) -> None:
    with storage.open_read(AREA, "a.bin") as handle:
        assert _read_all(handle) == DATA
        assert handle.served_digest() == _sha256(DATA)
        served = handle.served(len(DATA) + 99, complete=True)  # CRs added
    assert served is not None
    assert (served.sha256, served.source) == (_sha256(DATA), DIGEST_COMPUTED)


def test_bytes_changed_after_they_were_sent_give_no_digest(storage) -> None:
    handle = storage.open_read(AREA, "a.bin")
    handle.trust_index()
    handle.read(CHUNK)
    handle.read(CHUNK)  # the reader now holds the second chunk, not the first
    handle.close()
    local = storage.layout.local(AREA, "a.bin")
    with local.open("r+b") as raw:  # in place: the same file as the handle's
        raw.seek(30_000)
        byte = raw.read(1)
        raw.seek(30_000)
        raw.write(bytes([byte[0] ^ 0x40]))

    served = handle.served_again(2 * CHUNK)
    assert (served.sha256, served.source) == (None, DIGEST_UNAVAILABLE)
