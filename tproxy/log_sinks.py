# -*- test-case-name: tests.test_access_log -*-
"""
Where the access log's batches of lines go (the ``access_log`` plugin's
``target``): a file descriptor the process has (standard output or error,
non-blocking or not: what a full pipe does not take is kept for the next
write), or an append-only file rotated by size and reopened on ``SIGUSR1``.
"""

import errno
import os
import stat

from twisted.logger import Logger

__all__ = ["FdSink", "FileSink", "is_devnull"]

log = Logger(namespace="tproxy.builtins.access_log")


class FdSink(object):
    """A file descriptor the process already has (stdout, stderr)."""

    path = None

    def __init__(self, fd, name):
        self.fd = fd
        self.name = name
        self.pending = b""

    def write(self, data):
        """Write ``pending + data``; return how many bytes are left pending
        (a non-blocking descriptor that is full)."""
        data = self.pending + data if self.pending else data
        self.pending = b""
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                self.pending = bytes(view)
                break
            except InterruptedError:
                continue
            view = view[n:]
        return len(self.pending)

    def drop(self):
        """Forget the pending bytes; return how many lines they held."""
        lines = self.pending.count(b"\n")
        self.pending = b""
        return lines

    def reopen(self):
        pass

    def close(self):
        pass


class FileSink(FdSink):
    """An append-only file, rotated by size, reopened on demand."""

    def __init__(self, path, max_size, keep):
        FdSink.__init__(self, None, path)
        self.path = path
        self.max_size = max_size
        self.keep = keep
        self._open()

    def _open(self):
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        self.fd = os.open(self.path, flags, 0o640)
        st = os.fstat(self.fd)
        self.size = st.st_size
        self.regular = stat.S_ISREG(st.st_mode)  # never rotate /dev/null or a FIFO

    def write(self, data):
        if self.fd is None:  # a reopen or a rotation failed: try again
            self._open()
        if (self.max_size and self.regular and self.size
                and self.size + len(data) > self.max_size):
            self.rotate()
        left = FdSink.write(self, data)
        self.size += len(data) - left
        return left

    def rotate(self):
        """``path`` becomes ``path.1`` (``path.1`` becomes ``path.2`` ...,
        keeping ``keep`` files) and a new ``path`` is started."""
        self.close()
        try:
            if self.keep:
                for i in range(self.keep - 1, 0, -1):
                    older = "%s.%d" % (self.path, i)
                    if os.path.exists(older):
                        os.replace(older, "%s.%d" % (self.path, i + 1))
                os.replace(self.path, self.path + ".1")
            else:
                os.unlink(self.path)
        except OSError as e:
            if e.errno != errno.ENOENT:
                log.error("access_log: cannot rotate {path}: {error}", path=self.path,
                          error=e.strerror or str(e))
        self._open()

    def reopen(self):
        self.close()
        try:
            self._open()
        except OSError as e:  # the next write tries again
            log.error("access_log: cannot reopen {path}: {error}", path=self.path,
                      error=e.strerror or str(e))

    def close(self):
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


def is_devnull(fd):
    """Whether ``fd`` is ``/dev/null`` (writing to it is work for nothing)."""
    try:
        st, null = os.fstat(fd), os.stat(os.devnull)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (null.st_dev, null.st_ino)
