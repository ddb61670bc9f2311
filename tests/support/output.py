"""A child process's output stream, read as it comes."""

from __future__ import annotations

import threading
from typing import IO


class Output:
    """Collects a child's stream in a thread, so that a test can wait for a line with a
    deadline and the child never blocks on a full pipe; the stream is closed at its end."""

    def __init__(self, stream: IO[str] | None) -> None:
        assert stream is not None
        self.text = ""
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        with stream:
            for line in stream:
                self.text += line

    def finished(self) -> str:
        """All of it, once the child closed its end (or after 10 s)."""
        self._thread.join(timeout=10)
        return self.text
