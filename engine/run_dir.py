"""A run's output folder: chosen so a new run never overwrites an old one, and locked while a run
writes to it, so two runs never interleave one log or overwrite each other's checkpoints."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from core.errors import ConfigError

LOCK_NAME = ".detrzoo.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class RunLock:
    """`output_dir/.detrzoo.lock`: created atomically (O_EXCL) with this process's pid and host.

    A lock whose process is gone on this host (a killed run) is stale and taken over."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self.held = False
        self.made_folder = False

    def holder(self) -> dict | None:
        """The live run holding the lock, or None (no lock, or a stale one)."""
        try:
            info = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        if info.get("host") == socket.gethostname() and not _alive(int(info.get("pid", -1))):
            return None
        return info

    def acquire(self) -> bool:
        """Take the lock; False when a live run holds it."""
        self.made_folder = self.made_folder or not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self.holder() is not None:
                    return False
                self.path.unlink(missing_ok=True)  # stale: its run was killed
                continue
            with os.fdopen(handle, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
            self.held = True
            return True
        return False

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def abandon(self) -> None:
        """Release, and remove the folder when this lock made it and nothing was written there (a run
        that stopped while it was being set up leaves no empty folder behind)."""
        self.release()
        if self.made_folder:
            try:
                self.path.parent.rmdir()
            except OSError:  # not empty: keep what is there
                pass


def _used(folder: Path) -> bool:
    return folder.exists() and any(p.name != LOCK_NAME for p in folder.iterdir())


def claim_output_dir(wanted: Path, reuse: bool) -> tuple[Path, RunLock]:
    """The folder this run writes to, locked.

    reuse=False: `wanted` if it is free (missing or empty), else wanted2, wanted3, ... (a new run never
    overwrites an old one). reuse=True (resuming, --auto-resume): `wanted` itself, unless another live
    run holds it."""
    wanted = Path(wanted)
    if wanted.exists() and not wanted.is_dir():
        raise ConfigError(f"output_dir {wanted} is a file", where="output_dir", hint="name a folder")
    if reuse:
        lock = RunLock(wanted)
        if not lock.acquire():
            raise ConfigError(f"another run (pid {lock.holder().get('pid')}) is writing to {wanted}",
                              where="output_dir", hint="wait for it to finish, or pass another --output-dir")
        return wanted, lock
    candidate, n = wanted, 2
    while True:
        if not _used(candidate):
            lock = RunLock(candidate)
            if lock.acquire():
                if not _used(candidate):  # still empty now that we hold it
                    return candidate, lock
                lock.release()
        candidate, n = wanted.with_name(f"{wanted.name}{n}"), n + 1
