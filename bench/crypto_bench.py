"""Throughput of the encrypted file format on one core; asserts nothing.

Run::

    python bench/crypto_bench.py              # 1 GiB, in memory
    python bench/crypto_bench.py --mib 256
    python bench/crypto_bench.py --dir /var/tmp   # also a real file round trip

Encryption streams the plaintext, generated in 1 MiB pieces, into a sink
that only counts bytes. Decryption replays one in-memory ciphertext of
``--window`` MiB until the same total is read, so no disk is needed; the
window is the only large buffer, and peak RSS is printed after each phase.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO
from typing import cast

from censusdrop.server.storage.crypto import DecryptingReader
from censusdrop.server.storage.crypto import EncryptingWriter
from censusdrop.server.storage.keyring import Keyring

MIB = 1024 * 1024
PIECE = MIB
ROUND = "bench"


class CountingSink:
    """A write-only file that keeps nothing but a byte count."""

    def __init__(self) -> None:
        self.count = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        size = memoryview(data).nbytes
        self.count += size
        return size

    def flush(self) -> None:
        pass


def main() -> None:
    options = _parse_args()
    total = options.mib * MIB
    piece = os.urandom(PIECE)
    with tempfile.TemporaryDirectory() as keys_dir:
        keyring = Keyring.create(Path(keys_dir) / "keys")
        keyring.ensure_round_key(ROUND)
        print(f"python {sys.version.split()[0]}, {options.mib} MiB, 64 KiB chunks")
        _report("sha256", total, lambda: _sha256(piece, total))
        _report("encrypt", total, lambda: _encrypt(keyring, piece, total))
        _report("decrypt", total, lambda: _decrypt(keyring, piece, total, options))
        reader = DecryptingReader(
            io.BytesIO(_ciphertext(keyring, piece, 64 * MIB)), keyring
        )
        _report("seek+read 64 KiB x1000", 1000 * 64 * 1024, lambda: _seeks(reader))
        if options.dir is not None:
            _file_round_trip(keyring, piece, total, options.dir)


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="data size in MiB")
    parser.add_argument("--window", type=int, default=64, help="decrypt buffer MiB")
    parser.add_argument("--dir", type=Path, help="also round-trip a real file here")
    return parser.parse_args()


def _sha256(piece: bytes, total: int) -> None:
    digest = hashlib.sha256()
    for _ in range(total // PIECE):
        digest.update(piece)


def _encrypt(keyring: Keyring, piece: bytes, total: int) -> None:
    writer = EncryptingWriter(cast(BinaryIO, CountingSink()), keyring, ROUND)
    for _ in range(total // PIECE):
        writer.write(piece)
    writer.finish()


def _decrypt(
    keyring: Keyring, piece: bytes, total: int, options: argparse.Namespace
) -> None:
    window = min(options.window * MIB, total)
    ciphertext = _ciphertext(keyring, piece, window)
    done = 0
    while done < total:
        reader = DecryptingReader(io.BytesIO(ciphertext), keyring)
        while data := reader.read(PIECE):
            done += len(data)


def _seeks(reader: DecryptingReader) -> None:
    """Reads at scattered offsets: each costs one or two chunks, no scan."""
    for step in range(1000):
        reader.seek(step * 7_919_993 % reader.size)
        reader.read(64 * 1024)


def _ciphertext(keyring: Keyring, piece: bytes, size: int) -> bytes:
    buffer = io.BytesIO()
    writer = EncryptingWriter(buffer, keyring, ROUND)
    for _ in range(size // PIECE):
        writer.write(piece)
    writer.finish()
    return buffer.getvalue()


def _file_round_trip(keyring: Keyring, piece: bytes, total: int, where: Path) -> None:
    with tempfile.TemporaryDirectory(dir=where) as scratch:
        path = Path(scratch) / "bench.enc"

        def write() -> None:
            with open(path, "wb") as raw:
                writer = EncryptingWriter(raw, keyring, ROUND)
                for _ in range(total // PIECE):
                    writer.write(piece)
                writer.finish()
                os.fsync(raw.fileno())

        def read() -> None:
            with DecryptingReader(open(path, "rb"), keyring) as reader:
                while reader.read(PIECE):
                    pass

        _report("file encrypt (+fsync)", total, write)
        _report("file decrypt (page cache)", total, read)


def _report(label: str, size: int, action: Callable[[], None]) -> None:
    started = time.perf_counter()
    action()
    elapsed = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rate = size / MIB / elapsed
    print(
        f"{label:28} {rate:9.0f} MiB/s {elapsed:7.2f} s   peak RSS {peak_mib:6.0f} MiB"
    )


if __name__ == "__main__":
    main()
