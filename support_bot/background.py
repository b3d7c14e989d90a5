"""A thread a process runs beside its work, started once and stopped with a join: a worker's
lease keeper (conversations/recovery.py) and its question lane (knowledge/search/ahead.py)."""

from __future__ import annotations

import threading


class BackgroundThread:
    """Subclasses give `thread_name` and `_loop`, which returns once `_stop` is set."""

    thread_name = "background"

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None

    def _loop(self) -> None:
        raise NotImplementedError
