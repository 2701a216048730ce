"""PostgreSQL and Redis for the test command when the machine has none (standard library only: dev.py runs
this before the virtualenv exists).

`OwnServices` starts both from Debian's packages on free private ports, with data directories under one
temporary directory (PostgreSQL with fsync off: test data is thrown away), and stops and deletes them at the
end. As root, PostgreSQL runs as the `postgres` user the Debian package creates (it refuses to run as root).
`postgres_stop()/postgres_start()` and `redis_stop()/redis_start()` restart one server on the same port and
data directory (the restart drill, tests/integration/test_restart_drill.py); `OwnServices(redis_persistent=True)`
runs Redis with an append-only file, as deploy/compose.yaml does, so queued messages survive its restart.
`choose(...)` decides: HITL_TEST_SERVICES=own always starts them, =system always uses the machine's
(HITL_TEST_DATABASE_URL / HITL_TEST_BROKER_URL or the local defaults), and unset uses the machine's when
both answer and starts its own otherwise.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/test"
DEFAULT_BROKER = "redis://127.0.0.1:6379/15"
MODES = ("auto", "own", "system")


def pg_bin() -> Path | None:
    """Debian's PostgreSQL server binaries (the newest installed major version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def answers(url: str, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at the URL's host and port."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnServices:
    def __init__(self, *, redis_persistent: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="hitl-test-services-"))
        self.pg_port, self.redis_port = free_port(), free_port()
        self.redis: subprocess.Popen | None = None
        self.redis_persistent = redis_persistent
        self.pg_started = False
        self.as_postgres = os.geteuid() == 0

    def _pg(self, *cmd: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        subprocess.run([*prefix, *cmd], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def start(self) -> dict[str, str]:
        """Start both; returns the environment that points the tests at them."""
        try:
            self._start_postgres()
            self._start_redis()
        except BaseException:
            self.stop()
            raise
        return {
            "HITL_TEST_DATABASE_URL": f"postgres://postgres@127.0.0.1:{self.pg_port}/test",
            "HITL_TEST_BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/15",
        }

    def _start_postgres(self) -> None:
        bindir = pg_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (Debian package: postgresql)")
        data = self.root / "pg"
        data.mkdir()
        if self.as_postgres:
            shutil.chown(self.root, user="postgres")
            shutil.chown(data, user="postgres")
        self._pg(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        self.postgres_start()
        self._pg(
            str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres", "test"
        )

    def postgres_start(self) -> None:
        """Start PostgreSQL on its port and data directory; returns once it accepts connections (after any
        crash recovery)."""
        bindir = pg_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (Debian package: postgresql)")
        data = self.root / "pg"
        options = (
            f"-p {self.pg_port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        )
        self._pg(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(data / "server.log"),
            "-w",
            "-o",
            options,
            "start",
        )
        self.pg_started = True

    def postgres_stop(self, mode: str = "fast") -> None:
        """Stop PostgreSQL (`pg_ctl stop -m fast|immediate|smart`; immediate is a crash: the next start
        recovers from the WAL); returns once it is down. Its data directory stays for `postgres_start()`."""
        if not self.pg_started:
            return
        bindir = pg_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (Debian package: postgresql)")
        self._pg(str(bindir / "pg_ctl"), "-D", str(self.root / "pg"), "-m", mode, "-w", "stop")
        self.pg_started = False

    def _start_redis(self) -> None:
        self.redis_start()

    def redis_start(self) -> None:
        """Start Redis on its port (and, when persistent, its append-only file); returns once it answers PING."""
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("Redis is not installed (Debian package: redis-server)")
        cmd = [
            server,
            "--port",
            str(self.redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.redis_persistent else "no",
        ]
        self.redis = subprocess.Popen(
            [*cmd, "--dir", str(self.root)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.redis.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self.redis.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("redis-server did not answer within 20 s")

    def redis_stop(self) -> None:
        """Stop Redis (SIGTERM: a persistent one writes its append-only file first; SIGKILL after 10 s)."""
        if self.redis is not None and self.redis.poll() is None:
            self.redis.terminate()
            try:
                self.redis.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.redis.kill()
                self.redis.wait(timeout=10)
        self.redis = None

    def stop(self) -> None:
        self.redis_stop()
        if self.pg_started:
            try:
                self.postgres_stop("fast")
            except subprocess.CalledProcessError:
                self.pg_started = False
        shutil.rmtree(self.root, ignore_errors=True)


def choose(mode: str, db_url: str, broker_url: str) -> bool:
    """True when the test command should start its own services (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"HITL_TEST_SERVICES must be one of {', '.join(MODES)}, not {mode!r}")
    if mode != "auto":
        return mode == "own"
    return not (answers(db_url) and answers(broker_url))
