"""PostgreSQL for tests: DATABASE_URL when one answers, else a private server (the `pgserver`
wheel's PostgreSQL 16, or initdb/pg_ctl on PATH); each session works in a database of its own
with a random name, dropped at the end."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import make_conninfo

from tests.support import free_port


def _answers(conninfo: str) -> bool:
    try:
        with psycopg.connect(conninfo, connect_timeout=2, autocommit=True) as connection:
            connection.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


class PrivatePostgres:
    """A server of this test session's own, stopped at the end."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="leadrelay-pg-")
        os.chmod(self.dir, 0o777)  # pgserver runs the server as an unprivileged user when we are root
        self.server: Any = None
        self.pg_ctl: list[str] | None = None
        self.conninfo = ""

    def start(self) -> PrivatePostgres:
        try:
            import pgserver
        except ImportError:
            pgserver = None
        if pgserver is not None:
            self.server = pgserver.get_server(self.dir, cleanup_mode="stop")
            self.conninfo = self.server.get_uri()
            return self
        initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
        if not (initdb and pg_ctl):
            raise RuntimeError(
                "no PostgreSQL: set DATABASE_URL, install the pgserver wheel, or put initdb on PATH"
            )
        port = free_port()
        data = os.path.join(self.dir, "data")
        subprocess.run([initdb, "-D", data, "-U", "postgres", "-A", "trust"], check=True, capture_output=True)
        self.pg_ctl = [pg_ctl, "-D", data]
        subprocess.run(
            [*self.pg_ctl, "-o", f"-p {port} -k {self.dir} -h 127.0.0.1", "-w", "start", "-l", data + ".log"],
            check=True,
            capture_output=True,
        )
        self.conninfo = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        return self

    def _processes(self) -> list[int]:
        """The postmaster and its children (every backend): all of them must freeze."""
        found = glob.glob(os.path.join(self.dir, "**", "postmaster.pid"), recursive=True)
        with open(found[0]) as pid_file:
            master = int(pid_file.readline())
        children = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as stat:
                        parent = int(stat.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                if parent == master:
                    children.append(int(entry))
        return [master, *children]

    def pause(self) -> None:
        for pid in self._processes():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self._processes():
            os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()
        elif self.pg_ctl:
            subprocess.run([*self.pg_ctl, "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def postgres_server() -> tuple[str, PrivatePostgres | None]:
    """DATABASE_URL when one answers there, else a private server for this run."""
    url = os.environ.get("DATABASE_URL")
    if url and _answers(url):
        return url, None
    private = PrivatePostgres().start()
    return private.conninfo, private


class ScratchDatabase:
    """A database with a random name on a server, dropped (connections and all) on `drop`."""

    def __init__(self, server_conninfo: str) -> None:
        self.server_conninfo = server_conninfo
        self.name = f"leadrelay_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server_conninfo, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{self.name}"')
        self.conninfo = make_conninfo(server_conninfo, dbname=self.name)
        parts = urlsplit(server_conninfo)
        # The same database as a URL, for `database.url` in a configuration.
        self.url = urlunsplit(parts._replace(path="/" + self.name)) if parts.scheme else ""

    def drop(self) -> None:
        with psycopg.connect(self.server_conninfo, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
