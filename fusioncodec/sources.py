"""Reading inputs from disk and streams without surprises.

A path must name a regular file: a FIFO would block until a writer comes (forever, when
none does) and a device such as ``/dev/zero`` never ends; pipes are read through a stream
(``-`` on the command line). An ``.fcb`` stream is read no further than its header declares
(plus one byte, so that trailing data is still refused): a few hundred bytes tell whether
the rest is worth reading.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from fusioncodec.container import MAX_HEADER_SIZE, Container, peek_header
from fusioncodec.errors import ArgumentError

__all__ = ["NotRegularFile", "read_container", "read_container_file", "regular_file"]


class NotRegularFile(OSError):
    """A path that names a FIFO, a device, a socket or a directory where a file is needed."""


def regular_file(path: str | os.PathLike) -> Path:
    """``path`` if it names a regular file (links followed); :class:`NotRegularFile` if it
    names something else, FileNotFoundError (an OSError) if nothing. Nothing is opened."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        what = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise NotRegularFile(f"{os.fspath(path)}: {what}")
    return Path(path)


def read_container(stream: BinaryIO, start: bytes = b"") -> Container:
    """One ``.fcb`` file from a binary stream, parsed and verified
    (:meth:`Container.from_bytes`), reading the header first and then only the payload
    bytes it declares; ``start``: bytes already read from the stream. :class:`ArgumentError`
    for a stream that does not give bytes."""
    head = stream.read(MAX_HEADER_SIZE - len(start))
    if not isinstance(head, bytes | bytearray):
        raise ArgumentError(f"not a binary stream: it gives {type(head).__name__}, not bytes")
    head = start + head
    rest = b""
    if len(head) == MAX_HEADER_SIZE:
        more = peek_header(head).total_size + 1 - len(head)
        rest = stream.read(more) if more > 0 else b""
    return Container.from_bytes(bytes(head) + rest)


def read_container_file(path: str | os.PathLike) -> Container:
    """:func:`read_container` of the regular file at ``path``."""
    with regular_file(path).open("rb") as f:
        return read_container(f)
