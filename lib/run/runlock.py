"""One run per output folder: run_all holds OUT_DIR/.run_all.lock while it runs.

The lock is an OS file lock (flock), so the kernel drops it when its holder dies, however it dies; the file
also names the holder (PID, start time, command) for the message a second run prints. A lock file that still
names a holder when its lock is free was left by a run that was killed: it is taken over with a notice.
"""
import datetime
import json
import os
import socket
import sys
from pathlib import Path

from lib.core.errors import FinCompressError

LOCK_FILE = ".run_all.lock"


def _try_lock(fd: int) -> bool:
    import fcntl  # POSIX, as run_all already is (it signals the kernel's process group)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 65536).decode("utf-8", "replace")
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        return {"pid": "?", "started": "?", "command": text[:80]}


class RunLock:
    """Held from acquire() to release(); release() removes the file, so a finished run leaves nothing behind."""

    def __init__(self, out_dir):
        self.path = Path(out_dir).resolve() / LOCK_FILE
        self.fd = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                held = _holder(fd)
                os.close(fd)
                raise FinCompressError(
                    f"{self.path.parent} is in use by another run_all (PID {held.get('pid', '?')}, started "
                    f"{held.get('started', '?')}); wait for it to finish or pass another --out-dir")
            if _same_file(fd, self.path):  # else its holder removed it between our open and our lock: try again
                break
            os.close(fd)
        stale = _holder(fd)
        if stale:
            print(f"run_all: taking over the lock of run PID {stale.get('pid', '?')} (started {stale.get('started', '?')}), "
                  "which is no longer running; its last stage may be unfinished and will run again", file=sys.stderr)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
              "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(me) + "\n").encode())
        os.fsync(fd)
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still locked: a waiting run then opens a fresh file
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
