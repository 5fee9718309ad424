"""Real PostgreSQL and HTTP servers for the check tests.

PostgreSQL: the one on 127.0.0.1:5432 when it answers (a throwaway database per test run, dropped after); where none
answers, a throwaway cluster from the installed ``initdb``/``pg_ctl`` on a free loopback port (as a non-root user,
since initdb refuses root).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg2

from tests.sshd import free_port, login_user

ROWS = [("2026-09-18", f"P{i:03d}", f"err {i} at 10.20.30.{i}", f"2026-09-18 {8 + i // 4:02d}:{(i * 7) % 60:02d}:00")
        for i in range(15)] + [("2026-09-17", "P900", "yesterday", "2026-09-17 23:00:00")]  # fmt: skip


def _can_connect(**params: object) -> bool:
    try:
        psycopg2.connect(connect_timeout=3, **params).close()  # type: ignore[arg-type]
    except psycopg2.OperationalError:
        return False
    return True


@contextmanager
def _throwaway_cluster() -> Iterator[dict[str, str]]:
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        raise RuntimeError("no PostgreSQL answers on 127.0.0.1:5432 and initdb/pg_ctl are not installed")
    user = getpass_user()
    folder = Path(tempfile.mkdtemp(prefix="guardia-pg-"))
    folder.chmod(0o777)
    data = folder / "data"
    port = free_port()
    run_as = ["runuser", "-u", user, "--"] if os.geteuid() == 0 else []
    subprocess.run([*run_as, initdb, "-D", str(data), "--auth=trust", "-U", user, "-E", "UTF8"],
                   check=True, capture_output=True)  # fmt: skip
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    subprocess.run([*run_as, pg_ctl, "-D", str(data), "-o", options, "-w", "-l", str(folder / "log"), "start"],
                   check=True, capture_output=True)  # fmt: skip
    try:
        yield {"DB_HOST": "127.0.0.1", "DB_PORT": str(port), "DB_USER": user}
    finally:
        subprocess.run([*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def getpass_user() -> str:
    try:
        import pwd  # POSIX only: imported where used, so that the tests import on Windows

        pwd.getpwnam("postgres")
        return "postgres" if os.geteuid() == 0 else login_user()
    except KeyError:
        return login_user()


@contextmanager
def postgres_database() -> Iterator[dict[str, str]]:
    """A throwaway database with ``tb_mes_wrk_prc_i`` filled in; yields the DB_* environment for it."""
    local = {"DB_HOST": "127.0.0.1", "DB_PORT": "5432", "DB_USER": "postgres"}
    server = (
        _nullcontext(local)
        if _can_connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
        else _throwaway_cluster()
    )
    with server as env:
        name = f"guardia_test_{uuid.uuid4().hex[:10]}"
        admin = psycopg2.connect(
            host=env["DB_HOST"], port=int(env["DB_PORT"]), user=env["DB_USER"], dbname="postgres"
        )
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        try:
            db = psycopg2.connect(
                host=env["DB_HOST"], port=int(env["DB_PORT"]), user=env["DB_USER"], dbname=name
            )
            try:
                with db, db.cursor() as cursor:  # the with-block commits; close() below closes
                    cursor.execute(
                        "CREATE TABLE tb_mes_wrk_prc_i (work_date date, prc_code text, err_msg text, reg_date timestamp,"
                        " qty numeric(10,2) DEFAULT 1.50, blob bytea DEFAULT '\\x00ff')"
                    )
                    cursor.executemany(
                        "INSERT INTO tb_mes_wrk_prc_i (work_date, prc_code, err_msg, reg_date) VALUES (%s, %s, %s, %s)",
                        ROWS,
                    )
            finally:
                db.close()
            yield {**env, "DB_NAME": name, "DB_PASSWORD": ""}
        finally:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()


@contextmanager
def _nullcontext(value: dict[str, str]) -> Iterator[dict[str, str]]:
    yield value


class HealthServer:
    """A real HTTP server with actuator-style endpoints: /up, /down, /503, /slow, /text, /html, /up-as-text, and /flip
    (settable)."""

    def __init__(self) -> None:
        self.flip_status = "UP"
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/slow":
                    time.sleep(2)
                status, body = {
                    "/up": (
                        200,
                        {"status": "UP", "components": {"db": {"status": "UP"}, "disk": {"status": "UP"}}},
                    ),
                    "/down": (503, {"status": "DOWN", "components": {"db": {"status": "DOWN"}}}),
                    "/slow": (200, {"status": "UP"}),
                    "/flip": (200 if owner.flip_status == "UP" else 503, {"status": owner.flip_status}),
                }.get(self.path, (0, None))
                if self.path == "/503" or self.path == "/text":
                    payload = b"Service Unavailable" if self.path == "/503" else b"ok"
                    self.send_response(503 if self.path == "/503" else 200)
                    self.send_header("Content-Type", "text/plain")
                elif self.path == "/html":
                    payload = b"<!doctype html><html><body><h1>Login</h1></body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                elif self.path == "/up-as-text":  # the health JSON under another Content-Type: still health
                    payload = b'{"status": "UP"}'
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                else:
                    payload = json.dumps(body).encode() if body else b"{}"
                    self.send_response(status or 404)
                    self.send_header("Content-Type", "application/vnd.spring-boot.actuator.v3+json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> HealthServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
