"""The append session's writer: jobs done in order, on a thread so encoding goes on meanwhile.

A job's error is kept and raised on the caller's thread at its next call; jobs after a failed
one are dropped, also those submitted after the error was raised (the session's close commits
what is buffered): their rows come after rows that were never committed, so committing them
would leave a gap that a re-run fills at the end, out of order. A re-run does them all again.

Group commit: a job submitted while the one before it still waits (not started) may join it
(``combine``), as databases commit the transactions that queued behind a flush together. So a
writer that falls behind (a GPU extract hands over a shard every few milliseconds) writes fewer,
larger segments, and its fixed costs per segment (creating the file, linking it, publishing the
cache file) and the merges that would follow are spread over more rows; a writer that keeps up
writes each job as it came. Waiting jobs were never committed, joined or not: a kill loses them,
and with joins they can hold more (the caller bounds a joined job's size).
"""
import collections
import threading


class OrderedWriter:
    """``do(job)`` for each submitted job, in order: on a background thread (at most MAX_WAITING
    jobs waiting, so memory stays bounded: a caller with more waits), or at once in the caller's
    thread (background=False). ``combine(waiting, job)``: a new job holding both, or None where they
    may not join (the caller bounds its size); asked only of the last job waiting, never of one
    started, and never changing it: the result replaces it in one assignment."""

    MAX_WAITING = 2

    def __init__(self, do, background=True, combine=None):
        self._do = do
        self._combine = combine
        self._error = None     # a failed job's exception, not yet raised on the caller's thread
        self._failed = False   # a job failed: nothing after it is done
        self._waiting = collections.deque() if background else None
        self._changed = threading.Condition()
        self._thread = None
        if background:
            self._thread = threading.Thread(target=self._drain, name="cache-writer", daemon=True)
            self._thread.start()

    def submit(self, job) -> None:
        if self._failed:
            self.raise_pending()
            return
        if self._waiting is None:
            try:
                self._do(job)
            except BaseException:
                self._failed = True
                raise
            return
        with self._changed:
            if self._waiting and self._waiting[-1] is not None and self._combine is not None:
                joined = self._combine(self._waiting[-1], job)
                if joined is not None:
                    self._waiting[-1] = joined
                    return
            while len(self._waiting) >= self.MAX_WAITING:
                self._changed.wait()
            self._waiting.append(job)
            self._changed.notify_all()

    def raise_pending(self) -> None:
        """A failed job's exception, raised here (once)."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        """Wait for every submitted job; then the writer takes no more (later jobs run at once)."""
        if self._thread is not None:
            with self._changed:
                self._waiting.append(None)  # never joined: the end
                self._changed.notify_all()
            self._thread.join()
            self._thread = None
        self._waiting = None

    def _drain(self):
        while True:
            with self._changed:
                while not self._waiting:
                    self._changed.wait()
                job = self._waiting.popleft()
                self._changed.notify_all()
            if job is None:
                return
            if not self._failed:
                try:
                    self._do(job)
                except BaseException as exc:  # reported on the caller's thread
                    self._error, self._failed = exc, True
