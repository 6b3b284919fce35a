"""The append session's writer: jobs done in order, on a thread so encoding goes on meanwhile.

A job's error is kept and raised on the caller's thread at its next call; jobs after a failed
one are dropped, also those submitted after the error was raised (the session's close commits
what is buffered): their rows come after rows that were never committed, so committing them
would leave a gap that a re-run fills at the end, out of order. A re-run does them all again.
"""
import queue
import threading


class OrderedWriter:
    """``do(job)`` for each submitted job, in order: on a background thread (a queue of two, so at
    most two shards wait in memory), or at once in the caller's thread (background=False)."""

    def __init__(self, do, background=True):
        self._do = do
        self._error = None     # a failed job's exception, not yet raised on the caller's thread
        self._failed = False   # a job failed: nothing after it is done
        self._queue = queue.Queue(maxsize=2) if background else None
        self._thread = None
        if background:
            self._thread = threading.Thread(target=self._drain, name="cache-writer", daemon=True)
            self._thread.start()

    def submit(self, job) -> None:
        if self._failed:
            self.raise_pending()
            return
        if self._queue is None:
            try:
                self._do(job)
            except BaseException:
                self._failed = True
                raise
            return
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
            if not self._failed:
                try:
                    self._do(job)
                except BaseException as exc:  # reported on the caller's thread
                    self._error, self._failed = exc, True
