"""The test command's own PostgreSQL and Redis (scripts/test_services.py): the choice, and a real start, use
and stop of both."""

import os
import shutil
import socket
import subprocess

import pytest

from scripts.test_services import OwnServices, answers, choose, pg_bin


def _listening() -> tuple[socket.socket, str]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s, f"x://127.0.0.1:{s.getsockname()[1]}/0"


def _closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    url = f"x://127.0.0.1:{s.getsockname()[1]}/0"
    s.close()
    return url


def test_auto_uses_the_machines_services_only_when_both_answer():
    sock, up = _listening()
    down = _closed_port_url()
    try:
        assert answers(up) and not answers(down)
        assert choose("auto", up, up) is False
        assert choose("auto", up, down) is True and choose("auto", down, up) is True
        assert choose("own", up, up) is True and choose("system", down, down) is False
        with pytest.raises(ValueError):
            choose("mine", up, up)
    finally:
        sock.close()


def test_own_services_start_answer_and_leave_nothing_behind():
    if pg_bin() is None or shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs Debian's postgresql and redis-server for the test command's own services")
        pytest.skip("postgresql / redis-server not installed (the test command installs them as root)")
    services = OwnServices()
    urls = services.start()
    try:
        psycopg = pytest.importorskip("psycopg")
        with psycopg.connect(urls["HITL_TEST_DATABASE_URL"].replace("postgres://", "postgresql://")) as conn:
            assert conn.execute("select current_database()").fetchone()[0] == "test"
        port = int(urls["HITL_TEST_BROKER_URL"].rsplit(":", 1)[1].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"PING\r\n")
            assert s.recv(16).startswith(b"+PONG")
    finally:
        services.stop()
    assert not services.root.exists()
    assert not answers(urls["HITL_TEST_DATABASE_URL"]) and not answers(urls["HITL_TEST_BROKER_URL"])
    pids = subprocess.run(["pgrep", "-f", str(services.root)], capture_output=True, text=True).stdout.split()
    assert pids == []
