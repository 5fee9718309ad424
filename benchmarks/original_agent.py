"""The ORIGINAL GUARDiA agent, reconstructed from its design note (/work/shared/seed/original-agent-design-note.txt)
for comparison only: ``tests/test_v0_side_by_side.py`` and ``benchmarks/bench_v0.py`` run it beside the project's
agent in ``[relay] protocol = "v0"`` mode. It is **not part of the agent** and nothing in ``agent/`` imports it.

It is kept as faithful to the note as possible, bugs included: synchronous psycopg2 and requests calls inside the
async handler (the event loop stops while they run), ``json.loads`` on every frame (a frame that is not a JSON
object, a ``params`` that is not an object, a date PostgreSQL refuses or a WAS answering something other than JSON
drop the connection: the exception reaches the reconnect loop), ``packet.get`` (missing ids are answered as
``null``), a new database connection per query, a fixed 5 s sleep before reconnecting, print() for logging.

Parametrised only where the note reads the environment (``EXTERNAL_WS_URL``, ``DB_HOST``, ``DB_PORT``,
``DB_USER``, ``DB_PASSWORD``, ``DB_NAME``), plus ``ORIGINAL_WAS_URL`` for the WAS health URL the note hard-codes
(``http://10.100.10.10:8080/actuator/health``). The note does not show ``check_disk_space``: here it is
``shutil.disk_usage("/")`` as total/used/free/percent.

Run: ``python -m benchmarks.original_agent``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
from typing import Any

import psycopg2
import requests
import websockets
from psycopg2.extras import RealDictCursor

DB_CONFIG = {
    "host": os.environ["DB_HOST"],
    "port": int(os.environ.get("DB_PORT", 5432)),
    "user": os.environ["DB_USER"],
    "password": os.environ["DB_PASSWORD"],
    "database": os.environ["DB_NAME"],
}
EXTERNAL_WS_URL = os.environ["EXTERNAL_WS_URL"]
#: The note hard-codes "http://10.100.10.10:8080/actuator/health".
WAS_HEALTH_URL = os.environ.get("ORIGINAL_WAS_URL", "")


class InfrastructureJsonEncoder(json.JSONEncoder):
    def default(self, obj: Any) -> Any:
        if isinstance(obj, (datetime.datetime, datetime.date)):
            return obj.isoformat()
        return super().default(obj)


def fetch_mes_qc(work_date: str) -> list[Any]:
    """고정 쿼리 + 파라미터 바인딩 (SQL Injection 방지)"""
    conn = psycopg2.connect(**DB_CONFIG)
    try:
        with conn.cursor(cursor_factory=RealDictCursor) as cur:
            sql = """
                SELECT work_date, prc_code, err_msg, reg_date
                FROM tb_mes_wrk_prc_i
                WHERE work_date = %s
                ORDER BY reg_date DESC LIMIT 10
            """
            cur.execute(sql, (work_date,))
            rows: list[Any] = json.loads(json.dumps(cur.fetchall(), cls=InfrastructureJsonEncoder))
            return rows
    finally:
        conn.close()


def check_was_health() -> dict[str, Any]:
    try:
        r = requests.get(WAS_HEALTH_URL, timeout=3)
        body: dict[str, Any] = r.json()
        return body
    except requests.exceptions.ConnectionError:
        return {"status": "DOWN", "error": "연결 거부"}
    except requests.exceptions.Timeout:
        return {"status": "DOWN", "error": "타임아웃"}


def check_disk_space() -> dict[str, Any]:
    """Not shown in the note: the system drive's usage."""
    usage = shutil.disk_usage("/")
    return {
        "total": usage.total,
        "used": usage.used,
        "free": usage.free,
        "percent": round(usage.used / usage.total * 100, 1),
    }


async def handle_command(ws: Any, packet: Any) -> None:
    action = packet.get("action")
    params = packet.get("params", {})
    task_id = packet.get("task_id")
    room_id = packet.get("room_id")

    # 절대로 임의 셸 명령 직접 실행 금지
    # 반드시 정의된 함수만 호출
    data: Any
    if action == "FETCH_MES_QC":
        data = fetch_mes_qc(params.get("date"))
        status = "SUCCESS"
    elif action == "CHECK_INTERNAL_WAS_STATUS":
        data = check_was_health()
        status = "SUCCESS"
    elif action == "CHECK_DISK_SPACE":
        data = check_disk_space()
        status = "SUCCESS"
    else:
        data = {"error": f"허용되지 않은 action: {action}"}
        status = "FAIL"

    await ws.send(
        json.dumps(
            {
                "event": "TASK_FINISHED",
                "room_id": room_id,
                "task_id": task_id,
                "payload": {"status": status, "data": data},
            }
        )
    )


async def agent_main_loop() -> None:
    while True:
        try:
            async with websockets.connect(EXTERNAL_WS_URL) as ws:
                print("연결 성공")
                async for message in ws:
                    await handle_command(ws, json.loads(message))
        except (websockets.ConnectionClosed, OSError):
            print("연결 끊김 — 5초 후 재연결")
            await asyncio.sleep(5)
        except Exception as e:
            print(f"예외: {e}")
            await asyncio.sleep(5)


if __name__ == "__main__":
    asyncio.run(agent_main_loop())
