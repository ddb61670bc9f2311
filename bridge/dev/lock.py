"""One ``bridge dev`` per state directory.

A second one would rewrite dev.toml with its own Redis and open the AOF the first one writes.
The running one holds an flock on ``dev.lock`` for its lifetime, which the OS releases when the
process dies, however it dies: a killed ``bridge dev`` never blocks the next. The file also
says who holds it (pid and URLs), for the refusal.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import orjson

LOCK_FILE = "dev.lock"


class AlreadyRunning(Exception):
    """Another ``bridge dev`` holds this state directory."""

    def __init__(self, directory: Path, holder: dict[str, object]) -> None:
        pid = holder.get("pid", "unknown, still starting")
        urls = ", ".join(f"{name} {holder[name]}" for name in ("webhook", "dashboard", "redis")
                         if name in holder)
        super().__init__(
            f"`bridge dev` is already running with the state directory {directory} (pid "
            f"{pid}{': ' + urls if urls else ''}). Use that one, stop it first, or give "
            "another --state-dir (and other ports).")


def holder_of(directory: Path) -> dict[str, object] | None:
    """Who holds ``directory`` now (None: nobody), creating nothing."""
    path = directory / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        if _try_lock(fd):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        return _read(path)
    finally:
        os.close(fd)


class DevLock:
    """Held from :meth:`acquire` until :meth:`release` (or the process's end)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if not _try_lock(fd):
            os.close(fd)
            raise AlreadyRunning(self.directory, _read(self.path))
        self._fd = fd
        self.record(pid=os.getpid())

    def record(self, **holder: object) -> None:
        """Say who holds the lock (read by a second ``bridge dev``)."""
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, orjson.dumps({"pid": os.getpid(), **holder}), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read(path: Path) -> dict[str, object]:
    """What the holder wrote; nothing yet while it starts."""
    try:
        found = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return found if isinstance(found, dict) else {}
