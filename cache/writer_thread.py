"""The append session's writer: jobs done in order, on a thread so encoding goes on meanwhile.

A job's error is kept and raised on the caller's thread at its next call; jobs after a failed
one are dropped (their rows were never committed, so a re-run does them again).
"""
import queue
import threading


class OrderedWriter:
    """``do(job)`` for each submitted job, in order: on a background thread (a queue of two, so at
    most two shards wait in memory), or at once in the caller's thread (background=False)."""

    def __init__(self, do, background=True):
        self._do = do
        self._error = None
        self._queue = queue.Queue(maxsize=2) if background else None
        self._thread = None
        if background:
            self._thread = threading.Thread(target=self._drain, name="cache-writer", daemon=True)
            self._thread.start()

    def submit(self, job) -> None:
        if self._queue is None:
            self._do(job)
            return
        self.raise_pending()
        self._queue.put(job)

    def raise_pending(self) -> None:
        """A failed job's exception, raised here (once)."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        """Wait for every submitted job; then the writer takes no more (later jobs run at once)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self._queue = None

    def _drain(self):
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._error is None:
                try:
                    self._do(job)
                except BaseException as exc:  # reported on the caller's thread
                    self._error = exc
