"""Small files the node and its CLI keep beside their data: written atomically, never through a link.

Event cursors (`mqtt.cursor`, `events.cursor`, `<key>.events-cursor`) and the broker's `acl`,
`passwd` and `credentials.json` live in directories others may be able to write to (a shared home,
a broker directory), so an attacker may plant a symbolic link where the next write or read goes.
Here:

- `write_private_file` writes a temporary file of a random name in the target's directory, opened
  `O_CREAT | O_EXCL | O_NOFOLLOW` with mode 0600 (a planted link or file at that name is refused,
  never followed), fsyncs it, renames it over the target (a rename replaces a link at the target
  itself, never the file it points to) and fsyncs the directory. The directory is opened once and
  both steps name files relative to it, so it cannot be swapped between them. A reader sees the
  old file or the new one.
- `read_private_file` opens with `O_NOFOLLOW`, refuses anything but a regular file, and reads at
  most a bound.
- `load_event_cursor` / `save_event_cursor`: a cursor is one decimal event number in
  `[0, SEQ_MAX]`, nothing else; a file that is not exactly that is an error naming the file,
  never read as 0.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Final

from medledger.health.events import SEQ_MAX
from medledger.node.errors import NodeError

PRIVATE_FILE_MODE: Final = 0o600
#: Largest cursor file read: 20 digits and a line end, with room to spare.
CURSOR_BYTES_MAX: Final = 64
_CURSOR: Final = re.compile(rb"([0-9]{1,20})\r?\n?")


class PrivateFileError(NodeError):
    """A private file cannot be read or written as it must be (says which and why)."""

    code = "private_file_error"


def write_private_file(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically, mode 0600, without following any link (see above)."""
    directory_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        temporary = f".{path.name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(
            temporary,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            PRIVATE_FILE_MODE,
            dir_fd=directory_fd,
        )
        try:
            try:
                os.fchmod(fd, PRIVATE_FILE_MODE)  # the umask may have cleared bits at creation
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, path.name, src_dir_fd=directory_fd, dst_dir_fd=directory_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=directory_fd)
            raise
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def read_private_file(path: Path, max_bytes: int) -> bytes | None:
    """The bytes of regular file `path` (None if it does not exist); `PrivateFileError` for a link,
    a directory or other non-regular file, more than `max_bytes`, or a read error."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if path.is_symlink():
            raise PrivateFileError(f"{path} is a symbolic link; refusing to follow it") from None
        raise PrivateFileError(f"{path} cannot be read: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PrivateFileError(f"{path} is not a regular file")
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise PrivateFileError(f"{path} cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise PrivateFileError(f"{path} is larger than {max_bytes} bytes")
    return data


def parse_event_cursor(raw: bytes) -> int | None:
    """The event number a cursor file holds, or None if it is not exactly one in `[0, SEQ_MAX]`."""
    match = _CURSOR.fullmatch(raw)
    if match is None or int(match.group(1)) > SEQ_MAX:
        return None
    return int(match.group(1))


def load_event_cursor(path: Path) -> int | None:
    """The cursor saved in `path` (None: no file yet); `PrivateFileError` for anything else."""
    raw = read_private_file(path, CURSOR_BYTES_MAX)
    if raw is None:
        return None
    seq = parse_event_cursor(raw)
    if seq is None:
        raise PrivateFileError(f"{path} does not hold an event number (a decimal integer in [0, {SEQ_MAX}])")
    return seq


def save_event_cursor(path: Path, seq: int) -> None:
    if not 0 <= seq <= SEQ_MAX:
        raise ValueError(f"event number out of range: {seq}")  # a bug in the caller
    write_private_file(path, str(seq).encode("ascii"))  # as before: digits only, no line end
