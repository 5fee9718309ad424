"""Protocol v0 end to end: a minimal v0 relay, written from issue 13's text (not from the agent's code), drives a real
``agent run`` process with a real PostgreSQL table tb_mes_wrk_prc_i and a real HTTP health server that answers UP,
then hangs, then is down.

What the v0 relay knows: it sends ``{"action", "params", "task_id", "room_id"}`` (optional ``user_id``; here also the
``auth`` object, since the agent is given a command key) and expects exactly one ``{"event": "TASK_FINISHED",
"room_id", "task_id", "payload": {"status", "data"}}`` per command, and nothing else. It never ACKs.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from tests.services import postgres_database
from tests.waiting import eventually

pytestmark = pytest.mark.external_service

KEY = "v0-command-key-for-the-tests"
SECRET = "Db-Passw0rd-xyz"
V0_KEYS = {"event", "room_id", "task_id", "payload"}


def sign(packet: dict[str, Any]) -> dict[str, Any]:
    """docs/protocol.md, "Signed commands", implemented from the text."""
    ts, nonce = int(time.time()), secrets.token_hex(12)
    canonical = json.dumps(packet, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    text = f"guardia-command/1\n{ts}\n{nonce}\n{canonical}".encode()
    return {
        **packet,
        "auth": {"ts": ts, "nonce": nonce, "sig": hmac.new(KEY.encode(), text, hashlib.sha256).hexdigest()},
    }


class V0Relay:
    """Sends commands, collects every frame the agent sends. No ACK, no HELLO handling: v0 knows neither."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.connections = 0
        self.ws: ServerConnection | None = None
        self.changed = asyncio.Event()
        self.drop_after_next_command = False

    async def handler(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.connections += 1
        self.changed.set()
        async for frame in ws:
            assert isinstance(frame, str)
            self.raw.append(frame)
            self.frames.append(json.loads(frame))
            self.changed.set()

    async def wait(self, condition: Any, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()

    async def command(self, action: str, task_id: str, signed: bool = True, **params: Any) -> str:
        """Send a command; return the frame as sent."""
        await self.wait(lambda: self.ws is not None)
        packet: dict[str, Any] = {"action": action, "params": params, "task_id": task_id, "room_id": "ops",
                                  "user_id": "kim"}  # fmt: skip
        assert self.ws is not None
        frame = json.dumps(sign(packet) if signed else packet, ensure_ascii=False)
        await self.ws.send(frame)
        return frame

    async def answer(self, task_id: str) -> dict[str, Any]:
        await self.wait(lambda: any(f.get("task_id") == task_id for f in self.frames))
        return next(f for f in self.frames if f.get("task_id") == task_id)


class SwitchableHealth:
    """A real HTTP server on loopback: ``up`` answers actuator JSON, ``html`` a 200 web page, ``hang`` accepts and
    never answers, ``down`` closes the listening socket (connections are refused)."""

    def __init__(self) -> None:
        self.mode = "up"
        self.server: asyncio.Server | None = None
        self.port = 0
        self.hung: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if self.mode == "hang":
            self.hung.append(writer)
            return
        if self.mode == "html":  # a WAS (or a proxy before it) answering 200 with a page, not the health JSON
            page = b"<html><body><h1>Welcome</h1></body></html>"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: "
                         + str(len(page)).encode() + b"\r\nConnection: close\r\n\r\n" + page)  # fmt: skip
            await writer.drain()
            writer.close()
            return
        body = json.dumps({"status": "UP", "components": {
            "db": {"status": "UP", "details": {"database": "PostgreSQL", "url": "jdbc:postgresql://10.1.2.3/mes"}},
            "diskSpace": {"status": "UP", "details": {"total": 100, "free": 60}}}}).encode()  # fmt: skip
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)  # fmt: skip
        await writer.drain()
        writer.close()

    async def go_down(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.hung:
            writer.close()
        await self.server.wait_closed()


def db_today(env: dict[str, str]) -> str:
    """The database's current_date (its session's timezone), as FETCH_MES_QC's ``today`` is."""
    db = psycopg2.connect(
        host=env["DB_HOST"], port=int(env["DB_PORT"]), user=env["DB_USER"], dbname=env["DB_NAME"]
    )
    try:
        with db.cursor() as cursor:
            cursor.execute("SELECT current_date::text")
            row = cursor.fetchone()
    finally:
        db.close()
    assert row is not None
    return str(row[0])


@pytest.fixture(scope="module")
def mes_db() -> Any:
    """A throwaway database of its own (rows added here do not disturb other tests)."""
    with postgres_database() as env:
        db = psycopg2.connect(host=env["DB_HOST"], port=int(env["DB_PORT"]), user=env["DB_USER"],
                              dbname=env["DB_NAME"])  # fmt: skip
        with db, db.cursor() as cursor:
            rows = [("2026-09-20", "N1", "no time", None), ("2026-09-20", "A1", "first", "2026-09-20 08:00:00"),
                    ("2026-09-20", "B2", "second", "2026-09-20 09:30:00")]  # fmt: skip
            cursor.executemany(
                "INSERT INTO tb_mes_wrk_prc_i (work_date, prc_code, err_msg, reg_date) VALUES (%s, %s, %s, %s)",
                rows,
            )
            # Today as the database counts it (its session's timezone), which is what FETCH_MES_QC's "today" is.
            cursor.execute(
                "INSERT INTO tb_mes_wrk_prc_i (work_date, prc_code, err_msg, reg_date) "
                "VALUES (current_date, 'T1', 'today''s', current_date + time '07:00')"
            )
        db.close()
        yield env


async def wait_process(condition: Any, timeout: float = 30) -> None:
    await eventually(condition, timeout, what="another process's state")


def outbox_count(home: Path) -> int:
    with sqlite3.connect(home / "var" / "outbox.sqlite3") as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


@pytest.fixture
async def v0(
    agent_home: Path, mes_db: dict[str, str], request: pytest.FixtureRequest
) -> AsyncIterator[tuple[V0Relay, SwitchableHealth, Path]]:
    """The agent in v0 mode; a schedule reports the WAS check every 0.3 s (pushed only with ``v0_reports``)."""
    relay, health = V0Relay(), SwitchableHealth()
    await health.start()
    config = agent_home / "agent.toml"
    param = getattr(request, "param", False)  # True: v0_reports; a string: more [relay] lines
    reports = "true" if param is True else "false"
    more = param if isinstance(param, str) else ""
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            "[relay]\n", f'[relay]\nprotocol = "v0"\nv0_reports = {reports}\n{more}'
        )
        + '\n[[schedules]]\nname = "was_often"\nchecks = ["was"]\ninterval = 0.3\nnotify = "always"\nroom = "ops"\n'
        + f'\n[checks.was]\nkind = "http"\nurl = "http://127.0.0.1:{health.port}/actuator/health"\ntimeout = 0.5\n'
        + '\n[actions]\nwas_status_check = "was"\n'
        + '\n[access.users]\nkim = ["operator"]\nlee = ["approver"]\n',
        encoding="utf-8",
        newline="\n",
    )
    async with serve(relay.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        env = {**os.environ, **mes_db, "DB_PASSWORD": SECRET, "AGENT_COMMAND_KEY": KEY,
               "EXTERNAL_WS_URL": f"ws://127.0.0.1:{port}/v0"}  # fmt: skip
        env.pop("AGENT_RELAY_TOKEN", None)
        with open(agent_home / "agent.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "agent", "-c", str(config), "run", "--log-level", "DEBUG"],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        try:
            await relay.wait(lambda: relay.connections > 0)
            yield relay, health, agent_home
            process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, 30) == 0
        finally:
            if process.poll() is None:
                process.kill()
            if health.server is not None and health.server.is_serving():
                await health.go_down()


async def test_v0_relay_gets_exactly_the_original_answers(
    v0: tuple[V0Relay, SwitchableHealth, Path], mes_db: dict[str, str]
) -> None:
    relay, health, home = v0
    # FETCH_MES_QC: the rows, exactly four keys, ORDER BY reg_date DESC (NULL first, as PostgreSQL puts it), at most
    # 10; internal addresses masked.
    await relay.command("FETCH_MES_QC", "qc-1", date="2026-09-18")
    qc = await relay.answer("qc-1")
    assert qc["payload"]["status"] == "SUCCESS"
    rows = qc["payload"]["data"]
    assert len(rows) == 10 and all(list(r) == ["work_date", "prc_code", "err_msg", "reg_date"] for r in rows)
    stamps = [r["reg_date"] for r in rows]
    assert stamps == sorted(stamps, reverse=True) and stamps[0] == "2026-09-18T11:38:00"
    assert all(r["work_date"] == "2026-09-18" for r in rows)
    assert not any("10.20.30." in r["err_msg"] for r in rows)
    await relay.command("FETCH_MES_QC", "qc-2", date="2026-09-20")
    assert [r["prc_code"] for r in (await relay.answer("qc-2"))["payload"]["data"]] == ["N1", "B2", "A1"]
    await relay.command("FETCH_MES_QC", "qc-3")  # no date: today as the database counts it (its current_date)
    await relay.command("FETCH_MES_QC", "qc-4", date="today")
    for task in ("qc-3", "qc-4"):
        answer = (await relay.answer(task))["payload"]
        assert [r["prc_code"] for r in answer["data"]] == ["T1"] and answer["date"] == db_today(mes_db)
    await relay.command("FETCH_MES_QC", "qc-5", date="2026-02-30")
    bad = (await relay.answer("qc-5"))["payload"]
    assert bad["status"] == "FAIL" and bad["code"] == "INVALID_ARGUMENTS"
    assert bad["data"]["error"].startswith("date: not a date PostgreSQL reads (SQLSTATE 22008")
    await relay.command("FETCH_MES_QC", "qc-6", date="2026/09/20")  # PostgreSQL reads it: so did the original
    slashes = (await relay.answer("qc-6"))["payload"]
    assert [r["prc_code"] for r in slashes["data"]] == ["N1", "B2", "A1"] and slashes["date"] == "2026-09-20"

    # CHECK_INTERNAL_WAS_STATUS: the WAS's own JSON (no address), then 타임아웃, then 연결 거부.
    await relay.command("CHECK_INTERNAL_WAS_STATUS", "was-up")
    up = (await relay.answer("was-up"))["payload"]
    assert up["status"] == "SUCCESS" and up["data"]["status"] == "UP"
    assert up["data"]["components"]["db"] == {"status": "UP", "details": {"database": "PostgreSQL"}}
    assert up["data"]["components"]["diskSpace"]["details"] == {"total": 100, "free": 60}
    # HTTP 200 with an HTML page: not the health JSON, so DOWN, in data and in the room text alike (issue 25).
    health.mode = "html"
    await relay.command("CHECK_INTERNAL_WAS_STATUS", "was-html")
    page = (await relay.answer("was-html"))["payload"]
    assert page["data"] == {"status": "DOWN", "error": "HTTP 200, not a health answer (no JSON status)"}
    assert "장애" in page["text"] and "정상" not in page["text"] and "✅" not in page["text"]
    assert "헬스 체크 응답이 아님" in page["text"]
    health.mode = "hang"
    await relay.command("CHECK_INTERNAL_WAS_STATUS", "was-hang")
    assert (await relay.answer("was-hang"))["payload"] == {**_keep_text(relay, "was-hang"), "status": "SUCCESS",
                                                            "data": {"status": "DOWN", "error": "타임아웃"}}  # fmt: skip
    await health.go_down()
    await relay.command("CHECK_INTERNAL_WAS_STATUS", "was-down")
    assert (await relay.answer("was-down"))["payload"]["data"] == {"status": "DOWN", "error": "연결 거부"}

    # CHECK_DISK_SPACE with no disk check configured: the agent PC's system drive.
    await relay.command("CHECK_DISK_SPACE", "disk-1")
    disk = (await relay.answer("disk-1"))["payload"]
    assert disk["status"] == "SUCCESS"
    data = disk["data"]
    assert data["total"] >= data["used"] + data["free"] > 0  # blocks reserved for root are neither
    assert data["percent"] == round(100 * data["used"] / (data["used"] + data["free"]), 1)  # as df counts it
    assert 0 <= disk["data"]["percent"] <= 100

    # Anything else, whatever its case: FAIL naming the action as sent, redacted.
    await relay.command("DROP_TABLE", "x-1")
    await relay.command("fetch_mes_qc", "x-2")
    await relay.command(f"RESET password={SECRET}", "x-3")
    assert (await relay.answer("x-1"))["payload"]["data"] == {"error": "허용되지 않은 action: DROP_TABLE"}
    assert (await relay.answer("x-2"))["payload"]["data"] == {"error": "허용되지 않은 action: fetch_mes_qc"}
    x3 = (await relay.answer("x-3"))["payload"]
    assert x3["status"] == "FAIL" and x3["data"]["error"].startswith("허용되지 않은 action: RESET")

    # Not a JSON object: logged and ignored (the original answered none of these either). Ids are data: a task_id
    # with a space is answered, echoed as it came.
    assert relay.ws is not None
    for junk in ("garbage", "[1, 2]", "42"):
        await relay.ws.send(junk)
    await relay.ws.send(json.dumps(sign({"action": "CHECK_DISK_SPACE", "params": {}, "task_id": "bad id!",
                                         "room_id": "ops", "user_id": "kim"})))  # fmt: skip
    spaced = await relay.answer("bad id!")
    assert spaced["room_id"] == "ops" and spaced["payload"]["status"] == "SUCCESS", spaced
    # Signed commands still apply: an unsigned one is refused.
    await relay.command("CHECK_DISK_SPACE", "unsigned-1", signed=False)
    assert (await relay.answer("unsigned-1"))["payload"]["status"] == "FAIL"
    # Four eyes cannot be carried by v0: refused clearly, nothing held.
    await relay.command("RUN_RUNBOOK", "4eyes-1", runbook="approved_change", hosts=["h1"], args={"note": "a"})
    held = (await relay.answer("4eyes-1"))["payload"]
    assert held["status"] == "FAIL" and "four-eyes" in held["data"]["error"]
    await relay.command("LIST_RUNBOOKS", "list-1")
    listed = (await relay.answer("list-1"))["payload"]
    assert listed["status"] == "SUCCESS" and "echo_args" in [r["name"] for r in listed["data"]["runbooks"]]

    # The same frame again (a relay's resend): not run again; the same answer, marked duplicate. The same task_id
    # in a new command: v0 ids are not promised unique, so it runs (the original ran it too).
    frame = await relay.command("LIST_RUNBOOKS", "list-2")
    await relay.answer("list-2")
    await relay.ws.send(frame)
    await relay.wait(lambda: len([f for f in relay.frames if f["task_id"] == "list-2"]) == 2)
    again = [f for f in relay.frames if f["task_id"] == "list-2"][1]
    assert again["payload"]["data"] == qc_data(relay, "list-2") and again["payload"]["duplicate"] is True
    await relay.command("FETCH_MES_QC", "qc-1", date="2026-09-20")
    await relay.wait(lambda: len([f for f in relay.frames if f["task_id"] == "qc-1"]) == 2)
    reused = [f for f in relay.frames if f["task_id"] == "qc-1"][1]["payload"]
    assert reused["status"] == "SUCCESS" and reused["date"] == "2026-09-20" and "duplicate" not in reused

    # Exactly the v0 shape, one frame per command, nothing else (no report: v0_reports is off); no secret, no
    # address; all counted delivered.
    answered = {f["task_id"] for f in relay.frames}
    assert not any(t.startswith("report-") for t in answered)
    assert all(set(f) == V0_KEYS and f["event"] == "TASK_FINISHED" for f in relay.frames)
    assert all(f["payload"]["status"] in ("SUCCESS", "FAIL") and "data" in f["payload"] for f in relay.frames)
    assert (
        len(relay.frames) == len(answered) + 2
    )  # one frame each; list-2's resend and qc-1's reuse: a second
    assert not any(SECRET in raw or "10.1.2.3" in raw or "127.0.0.1" in raw for raw in relay.raw)
    await wait_process(lambda: outbox_count(home) == 0)
    log = (home / "agent.log").read_text(encoding="utf-8")
    assert "not JSON" in log or "JSON object" in log


def _keep_text(relay: V0Relay, task_id: str) -> dict[str, Any]:
    """The answer's extra payload keys (chat text), which the test does not pin."""
    payload = next(f for f in relay.frames if f.get("task_id") == task_id)["payload"]
    return {k: v for k, v in payload.items() if k not in ("status", "data")}


def qc_data(relay: V0Relay, task_id: str) -> Any:
    return next(f for f in relay.frames if f.get("task_id") == task_id)["payload"]["data"]


async def test_a_result_made_while_the_v0_relay_is_away_arrives_after_it_reconnects(
    v0: tuple[V0Relay, SwitchableHealth, Path],
) -> None:
    relay, health, home = v0
    health.mode = "hang"  # the answer takes the 0.5 s check timeout: the relay is gone by then
    await relay.command("CHECK_INTERNAL_WAS_STATUS", "away-1")
    assert relay.ws is not None
    await relay.ws.close()
    await relay.wait(lambda: relay.connections == 2)
    answer = await relay.answer("away-1")
    assert answer["payload"]["data"] == {"status": "DOWN", "error": "타임아웃"}
    await wait_process(lambda: outbox_count(home) == 0)
    # The relay must accept duplicates by task_id; this one arrived on the second connection, once.
    assert [f["task_id"] for f in relay.frames].count("away-1") == 1


@pytest.mark.parametrize(("v0", "resent"), [("", True), ('v0_resend = "never"\n', False)], indirect=["v0"])
async def test_an_answer_written_but_unread_when_the_relay_drops_is_resent_unless_never(
    v0: tuple[V0Relay, SwitchableHealth, Path], resent: bool
) -> None:
    relay, health, home = v0
    await relay.wait(lambda: relay.ws is not None)
    assert relay.ws is not None
    health.mode = "hang"  # the answer comes after the 0.5 s check timeout
    await relay.command("CHECK_INTERNAL_WAS_STATUS", "unread-1")
    relay.ws.transport.pause_reading()  # the relay reads nothing more: no frame, no ping answered
    await wait_process(lambda: '"task_id":"unread-1"' in (home / "agent.log").read_text(encoding="utf-8"))
    if not resent:  # counted delivered once written
        await wait_process(lambda: outbox_count(home) == 0)
    else:
        assert outbox_count(home) == 1
    relay.ws.transport.abort()  # the relay dies without having read it
    await relay.wait(lambda: relay.connections == 2)
    health.mode = "up"
    await relay.command("CHECK_INTERNAL_WAS_STATUS", "after-1")
    await relay.answer("after-1")  # answers go in order: a resend of unread-1 would have come first
    assert [f["task_id"] for f in relay.frames].count("unread-1") == (1 if resent else 0)
    await wait_process(lambda: outbox_count(home) == 0)


@pytest.mark.parametrize("v0", [True], indirect=True)
async def test_with_v0_reports_a_schedule_pushes_reports_in_the_answer_shape(
    v0: tuple[V0Relay, SwitchableHealth, Path],
) -> None:
    relay, _, _ = v0

    def schedule_reports() -> list[dict[str, Any]]:
        return [f for f in relay.frames if f["task_id"].startswith("report-")
                and f["payload"]["data"].get("kind") == "schedule"]  # fmt: skip

    await relay.wait(lambda: bool(schedule_reports()))
    report = schedule_reports()[0]
    assert set(report) == V0_KEYS and report["event"] == "TASK_FINISHED" and report["room_id"] == "ops"
    assert report["payload"]["status"] == "SUCCESS"
    (check,) = report["payload"]["data"]["checks"]
    assert check["check"] == "was" and check["status"] == "OK"
    # Every report goes out in the answer shape, the agent's start notice too.
    assert all(set(f) == V0_KEYS for f in relay.frames if f["task_id"].startswith("report-"))


class NoPongRelay:
    """A v0 relay over websockets' sans-I/O protocol that reads the agent's frames but never answers a ping (a relay
    that crashed or hung right after the TCP stack took the frames): the agent must not count them delivered."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None
        self.protocol: ServerProtocol | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        protocol = ServerProtocol()
        while True:
            data = await reader.read(65536)
            if not data:
                return
            protocol.receive_data(data)
            requests = [e for e in protocol.events_received() if isinstance(e, Request)]
            if requests:
                protocol.send_response(protocol.accept(requests[0]))
                writer.write(b"".join(protocol.data_to_send()))
                break
        self.writer, self.protocol = writer, protocol
        self.changed.set()
        while data := await reader.read(65536):
            protocol.receive_data(data)
            protocol.data_to_send()  # pongs (and anything else the protocol would say): never sent
            for event in protocol.events_received():
                if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    self.frames.append(json.loads(event.data))
                    self.changed.set()

    async def send(self, packet: dict[str, Any]) -> None:
        assert self.protocol is not None and self.writer is not None
        self.protocol.send_text(json.dumps(packet).encode())
        self.writer.write(b"".join(self.protocol.data_to_send()))

    async def wait(self, condition: Any, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()

    async def drop(self) -> None:
        assert self.writer is not None
        self.writer.transport.abort()
        self.server.close()
        await self.server.wait_closed()


async def test_an_answer_the_relay_never_confirmed_is_sent_again_after_a_restart(agent_home: Path) -> None:
    """Read by the relay's TCP stack, but no pong: still in the outbox; after SIGKILL and a restart it goes to the
    next relay again (which must accept it twice by task_id)."""
    silent = NoPongRelay()
    port = await silent.start()
    config = agent_home / "agent.toml"
    config.write_text(
        config.read_text(encoding="utf-8").replace("[relay]\n", '[relay]\nprotocol = "v0"\n'),
        encoding="utf-8",
        newline="\n",
    )
    env = {**os.environ, "EXTERNAL_WS_URL": f"ws://127.0.0.1:{port}/v0"}
    env.pop("AGENT_COMMAND_KEY", None)
    process = _agent(config, env, agent_home)
    try:
        await silent.wait(lambda: silent.protocol is not None)
        await silent.send({"action": "LIST_RUNBOOKS", "params": {}, "task_id": "np-1", "room_id": "ops"})
        await silent.wait(lambda: any(f["task_id"] == "np-1" for f in silent.frames))
        assert outbox_count(agent_home) == 1  # sent, read, but not confirmed
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait, 10)
        await silent.drop()

        relay = V0Relay()
        async with serve(relay.handler, "127.0.0.1", 0) as server:
            env["EXTERNAL_WS_URL"] = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/v0"
            process = _agent(config, env, agent_home)
            again = await relay.answer("np-1")
            assert again == silent.frames[0]  # the same frame, sent again
            await wait_process(lambda: outbox_count(agent_home) == 0)
            process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()


def _agent(config: Path, env: dict[str, str], home: Path) -> subprocess.Popen[bytes]:
    with open(home / "agent.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "agent", "-c", str(config), "run", "--log-level", "DEBUG"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
