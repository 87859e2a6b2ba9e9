"""The batch's bundle archive: every sealed bundle of a factory batch in one ZIP file (PKWARE APPNOTE 6.3.x),
entries stored uncompressed (sealed bundles do not compress) and named ``SERIAL.bundle``.

Why one archive and not one file per device: on this project's reference machine (ext4, two cores) creating
100,000 small files cost 7 s of wall time on a fresh directory but 37 to 78 s right after a previous batch's
100,000 files were deleted, and deleting 300,000 took over three minutes; the archive costs a few microseconds
per device, whatever the file system has just done. It is also what the line handles best: one file to copy to
the flashing stations, one to destroy after the batch (together with the key file, which alone already makes
every bundle unreadable), and any ZIP tool or library reads a device's bundle by name (``unzip -p bundles.zip
L1-00000042.bundle``; Python's :mod:`zipfile`; ``ostiary factory show-bundle bundles.zip --serial L1-00000042``).

:class:`ArchiveWriter` writes the format directly (Python's :class:`zipfile.ZipFile` spends about 70 µs per
entry); batches of more than 65,535 devices get the ZIP64 end records (APPNOTE §4.3.14, §4.3.15), which every
current reader understands. Reading uses :mod:`zipfile`.

>>> import io, zipfile
>>> out = io.BytesIO()
>>> with ArchiveWriter(out, now=1774279812) as archive:
...     archive.add("L1-00000001.bundle", b"sealed bytes")
>>> zipfile.ZipFile(out).read("L1-00000001.bundle")
b'sealed bytes'
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Final

__all__ = ["ArchiveError", "ArchiveWriter", "read_member"]

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_END64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR64 = struct.Struct("<IIQI")
_VERSION = 20  # 2.0: stored entries
_VERSION64 = 45  # 4.5: ZIP64 end records
_MADE_BY_UNIX = 3 << 8
_FILE_MODE = 0o100600  # a regular file, owner read/write only (what unzip restores)
_MAX16: Final = 0xFFFF
_MAX32: Final = 0xFFFFFFFF
#: Members larger than this are refused when read (a bundle is about 250 bytes).
MAX_ARCHIVE_MEMBER: Final = 1 << 16


class ArchiveError(ValueError):
    """The archive is not a readable ZIP file, or has no such member."""


def _dos_time(now: int) -> tuple[int, int]:
    t = datetime.fromtimestamp(max(now, 315532800), UTC)  # ZIP dates start in 1980
    return (t.hour << 11) | (t.minute << 5) | (t.second // 2), ((t.year - 1980) << 9) | (t.month << 5) | t.day


class ArchiveWriter:
    """Appends stored entries to a binary file object, then the central directory on :meth:`close`."""

    def __init__(self, fp: BinaryIO, *, now: int) -> None:
        self._fp = fp
        self._offset = 0
        self._central: list[bytes] = []
        self._time, self._date = _dos_time(now)
        self._names: set[str] = set()

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()

    def __len__(self) -> int:
        return len(self._central)

    def add(self, name: str, data: bytes) -> None:
        """Append one entry; ``name`` is ASCII without ``/`` or ``\\``, unique in the archive."""
        raw = name.encode("ascii")
        if not raw or b"/" in raw or b"\\" in raw or len(raw) > _MAX16 or name in self._names:
            raise ArchiveError(f"invalid or repeated member name {name!r}")
        if self._offset >= _MAX32 or len(data) >= _MAX32:
            raise ArchiveError("archive larger than 4 GiB")
        self._names.add(name)
        crc = zlib.crc32(data)
        size = len(data)
        header = _LOCAL.pack(0x04034B50, _VERSION, 0, 0, self._time, self._date, crc, size, size, len(raw), 0)
        self._central.append(
            _CENTRAL.pack(
                0x02014B50,
                _MADE_BY_UNIX | _VERSION64,
                _VERSION,
                0,
                0,
                self._time,
                self._date,
                crc,
                size,
                size,
                len(raw),
                0,
                0,
                0,
                0,
                _FILE_MODE << 16,
                self._offset,
            )
            + raw
        )
        self._fp.write(header + raw + data)
        self._offset += len(header) + len(raw) + size

    def close(self) -> None:
        """Write the central directory and the end records (ZIP64 ones when there are over 65,535 entries)."""
        directory = b"".join(self._central)
        start, count = self._offset, len(self._central)
        if start + len(directory) >= _MAX32:
            raise ArchiveError("archive larger than 4 GiB")
        self._fp.write(directory)
        end = start + len(directory)
        if count > _MAX16:
            self._fp.write(
                _END64.pack(
                    0x06064B50, _END64.size - 12, _VERSION64, _VERSION64, 0, 0, count, count, len(directory), start
                )
                + _LOCATOR64.pack(0x07064B50, 0, end, 1)
            )
        shown = min(count, _MAX16)
        self._fp.write(_END.pack(0x06054B50, 0, 0, shown, shown, len(directory), start, 0))
        self._central.clear()


def read_member(path: Path, name: str) -> bytes:
    """The bytes of member ``name`` of the ZIP file at ``path``.

    :raises ArchiveError: not a ZIP file, no such member, or the member is damaged (CRC).
    :raises OSError: the file cannot be read.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(name)
            if info.file_size > MAX_ARCHIVE_MEMBER:
                raise ArchiveError(f"member {name} is larger than {MAX_ARCHIVE_MEMBER} bytes")
            return archive.read(info)
    except KeyError:
        raise ArchiveError(f"{path} has no member {name}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
        raise ArchiveError(f"{path} is not a readable ZIP archive ({exc})") from None
