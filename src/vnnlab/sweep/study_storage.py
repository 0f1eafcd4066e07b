"""Where an Optuna study lives, named by one URL (`hydra.sweeper.storage`), and the lock under
which a sweeper opens the study and adds trials to it, so that several sweeper processes, on one
machine or on several nodes, can share one study:

    sqlite:///<file>                    Optuna's RDB storage in a SQLite file (one machine)
    postgresql+psycopg://<user>@<host>/<database>
                                        RDB storage in PostgreSQL (processes on any node)
    journal:///<file>                   Optuna's JournalStorage, an append-only file with Optuna's
                                        own file lock (nodes that share a filesystem, NFS)

Optuna numbers a new RDB trial by counting the study's trials in the transaction that inserts
it, so two processes asking at the same moment can get one number; and a sweeper that counts
the trials left and then asks can overshoot n_trials. Under the lock, counting and asking are
one step across processes. Other RDB URLs (MySQL) get no lock: one sweep per study at a time.

Optuna and SQLAlchemy are imported inside the functions: Hydra imports the sweeper plugin, and
so this module, for every command.
"""

import hashlib
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vnnlab import tags

JOURNAL = "journal://"
SQLITE = "sqlite:///"
POSTGRESQL = "postgresql"  # postgresql://, postgresql+psycopg://, …
# One PostgreSQL advisory lock for every vnnlab sweeper of a database: held for milliseconds,
# it also covers Optuna's first creation of its tables (two processes creating them race).
ADVISORY_KEY = int.from_bytes(hashlib.sha1(b"vnnlab.optuna").digest()[:8], "big", signed=True)


def absolute(url: str, launch_dir: Path) -> str:
    """The URL with a relative journal file made absolute (jobs on other nodes or in other
    folders must find the same file)."""
    if url.startswith(JOURNAL):
        return JOURNAL + str((launch_dir / url[len(JOURNAL) :]).resolve())
    return url


def open_storage(url: str) -> Any:
    """What optuna.create_study / load_study take as `storage`: the URL itself for an RDB, a
    JournalStorage on the file for journal:///<file>."""
    if not url.startswith(JOURNAL):
        return url
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = Path(url[len(JOURNAL) :])
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


@contextmanager
def study_lock(url: str) -> Iterator[None]:
    """Held by one sweeper process at a time for the storage at `url` (see the module's text)."""
    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileSymlinkLock

        # Optuna's lock for a shared filesystem, on a file of its own (Optuna's appends take
        # the journal's lock inside this one); a holder dead for 30 s loses it.
        path = Path(url[len(JOURNAL) :])
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = JournalFileSymlinkLock(f"{path}.ask")
        lock.acquire()
        try:
            yield
        finally:
            lock.release()
    elif url.startswith(SQLITE) and ":memory:" not in url:
        from vnnlab.tracking.store import folder_lock

        folder = Path(url[len(SQLITE) :]).resolve().parent
        folder.mkdir(parents=True, exist_ok=True)
        with folder_lock(folder):
            yield
    elif url.startswith(POSTGRESQL):
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                lock = sqlalchemy.text("SELECT pg_advisory_lock(:key)")
                connection.execute(lock, {"key": ADVISORY_KEY})
                try:
                    yield
                finally:
                    unlock = sqlalchemy.text("SELECT pg_advisory_unlock(:key)")
                    connection.execute(unlock, {"key": ADVISORY_KEY})
        finally:
            engine.dispose()
    else:
        yield


# --- who asked a trial ----------------------------------------------------------------------------


def owner_attrs() -> dict[str, Any]:
    """The trial user attributes that name the sweeper process that asked it."""
    return {tags.HOST: socket.gethostname(), tags.PID: os.getpid()}


def owner_alive(user_attrs: dict[str, Any]) -> bool:
    """Whether the sweeper that asked a RUNNING trial may still tell it. A trial with no owner
    (asked by hand, or by a sweeper before owners were recorded) has nobody to; one asked on
    another host cannot be checked from here and is left alone; one asked by this very process
    is left over from a sweep that ended (a process runs one sweep at a time)."""
    host, pid = user_attrs.get(tags.HOST), user_attrs.get(tags.PID)
    if host is None or pid is None:
        return False
    if host != socket.gethostname():
        return True
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
