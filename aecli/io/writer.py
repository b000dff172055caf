"""Writing output files in a background thread, so the model never waits for a PNG encoder or a disk."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

_END = None


class Writer:
    """Runs write jobs in order in one thread, at most `depth` waiting (each holds its images).

    The first job to fail stops the rest; its exception is raised in the caller's thread, at the
    next submit or at the end of the `with` block, so a failed write reads as it would unthreaded.
    Every write is still atomic (io.files.atomic_output): a job cut short leaves no partial file.
    """

    def __init__(self, depth: int = 8):
        self._jobs: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._reported = False
        self._thread = threading.Thread(target=self._run, name="aecli-writer", daemon=True)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not _END:
            if self._error is None:  # after a failure the rest are drained, not written
                try:
                    job[0](*job[1])
                except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
                    self._error = e

    def submit(self, write: Callable[..., Any], *args: Any) -> None:
        self._raise()
        if not self._thread.is_alive() and self._thread.ident is None:  # started late: loader workers fork first
            self._thread.start()
        self._jobs.put((write, args))

    def close(self) -> None:
        """Wait for the jobs submitted; raise the first failure."""
        if self._thread.is_alive():
            self._jobs.put(_END)
            self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None and not self._reported:
            self._reported = True
            raise self._error

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
            return
        try:  # the caller's own error wins; the files already queued are still written
            self.close()
        except BaseException:  # noqa: BLE001
            pass
