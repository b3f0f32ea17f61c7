"""A throwaway PostgreSQL cluster for the tests: initdb + pg_ctl in a temporary directory, on a free loopback port,
as a user that is not root (Debian's ``postgres`` when the tests run as root). Removed when the tests end.

Debian's ``postgresql`` package puts its programs in /usr/lib/postgresql/N/bin, off the PATH; ``make test``
installs it when it is missing and it runs as root (``make postgres``). Without it the tests that need it skip and
say why (:func:`unavailable`).
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid

from tests.integration.harness import free_port

SUPERUSER = "mschedule"


def bindir() -> str | None:
    """Where initdb and pg_ctl are: the newest /usr/lib/postgresql/N/bin, else the PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(os.path.realpath(initdb)) if initdb else None


def unavailable() -> str | None:
    """Why no cluster can be started here, or None."""
    if bindir() is None:
        return "PostgreSQL is not installed (Debian's postgresql package; make test installs it when run as root)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgresql]')"
    return None


class Cluster:
    """One PostgreSQL server; :meth:`database` makes a fresh database in it and returns its URL."""

    def __init__(self, fsync: bool = False) -> None:
        self.bin = bindir()
        self.dir = tempfile.mkdtemp(prefix="mschedule-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._pg("initdb", "-D", self.data, "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-instructions")
        self.settings = ["-c", f"port={self.port}", "-c", "listen_addresses=127.0.0.1",
                         "-c", f"unix_socket_directories={self.dir}", "-c", "max_connections=200"]
        if not fsync:  # the tests kill masters, not the database: no need to wait for its disk
            self.settings += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        self.start()

    def start(self) -> None:
        """Start the server (again, after :meth:`stop`), on the same port."""
        self._pg("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "server.log"), "-w", "-t", "60",
                 "-o", " ".join(self.settings), "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: every session is ended, as by a restart of PostgreSQL)."""
        self._pg("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop")

    def _pg(self, program: str, *args: str) -> None:
        subprocess.run([os.path.join(self.bin, program), *args], check=True, capture_output=True, timeout=120,
                       user=self.user, cwd=self.dir)

    @property
    def admin_url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def database(self) -> str:
        """A new, empty database: its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{name}"

    def sql(self, url: str, statement: str, *args) -> list[tuple]:
        """Run one statement on ``url``; its rows (none for a statement that returns none)."""
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            cur = conn.execute(statement, args or None)
            return cur.fetchall() if cur.description else []

    def close(self) -> None:
        try:
            self._pg("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "-t", "30", "stop")
        except (subprocess.SubprocessError, OSError):
            time.sleep(0.5)
        shutil.rmtree(self.dir, ignore_errors=True)


def cluster_or_skip(fsync: bool = False) -> Cluster:
    """A new :class:`Cluster`, or the test skipped with the reason there is none (:func:`unavailable`)."""
    import pytest

    why = unavailable()
    if why:
        pytest.skip(why)
    return Cluster(fsync=fsync)
