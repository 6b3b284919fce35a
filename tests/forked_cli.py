"""pipeline.py as a process of its own, forked from a server that has already imported torch.

The kill-and-restart campaigns start dozens of runs, and each fresh interpreter spends ~4.5 s (this
2-core machine) importing torch and torchvision before it touches the cache. Python's
multiprocessing ``forkserver`` does those imports once, in a single-threaded server, and forks a
child per run: a real process with its own pid, killed by a real SIGKILL to that pid alone (its
decoding workers live on, as under a scheduler), its lock, commits and exit status its own. What
the campaigns no longer cover is a kill during the interpreter's imports, before the cache is
opened; ``CNNCODES_TEST_SUBPROCESS=1`` runs every start as a fresh ``python pipeline.py`` again.

``ForkedCli`` offers the part of ``subprocess.Popen`` the tests use (pid, poll, wait,
send_signal, terminate, communicate, returncode), with text output read from files after exit.
"""
import multiprocessing
import os
import signal
import sys
import tempfile

# Imported by the server before any fork: the whole start-up cost of `python pipeline.py extract`
# (measured with -X importtime). Nothing here runs a torch op, so no thread pool exists to fork.
PRELOAD = ["torch", "torchvision", "h5py", "numpy", "PIL.Image", "cnncodes.cli", "cnncodes.cache",
           "cnncodes.extract.runner", "cnncodes.extract.extractor", "forked_cli"]

_context = None


def _server():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
        warm = _context.Process(target=os.getpid)  # returns once the server has done its imports
        warm.start()
        warm.join()
    return _context


def _run(argv, env, cwd, out_path, err_path):
    """The child: output to the files, the environment and folder of a subprocess, then main."""
    for fd, path in ((1, out_path), (2, err_path)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.environ.update(env)
    os.chdir(cwd)
    # As a fresh process has them: main installs its own SIGTERM handler, and the DataLoader's
    # decoding workers are forked by this process (multiprocessing made the server its default).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    multiprocessing.set_start_method(None, force=True)
    from cnncodes import cli
    sys.exit(cli.main(argv))  # multiprocessing turns SystemExit into the exit status


class ForkedCli:
    def __init__(self, argv, env, cwd):
        self._folder = tempfile.TemporaryDirectory(prefix="cnncodes-cli-")  # removed with this object
        self._out, self._err = (os.path.join(self._folder.name, name) for name in ("stdout", "stderr"))
        self._process = _server().Process(target=_run, args=(list(argv), dict(env), cwd, self._out, self._err))
        self._process.start()
        self.pid = self._process.pid

    @property
    def returncode(self):
        return self._process.exitcode  # negative signal number when killed, as Popen gives it

    def poll(self):
        self._process.is_alive()  # reaps a finished child
        return self.returncode

    def wait(self, timeout=None):
        self._process.join(timeout)
        return self.returncode

    def send_signal(self, sig):
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout=None):
        """(stdout, stderr) once the process has ended (TimeoutError if it has not within timeout)."""
        if self.wait(timeout) is None:
            raise TimeoutError(f"pipeline.py (pid {self.pid}) still running after {timeout} s")
        texts = []
        for path in (self._out, self._err):
            with open(path, encoding="utf-8", errors="replace") as f:
                texts.append(f.read())
        return tuple(texts)
