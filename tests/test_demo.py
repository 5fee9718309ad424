"""`agent demo`: the newcomer's first command, run as a real process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.reference.demo import parse_chat
from agent.session.protocol import Action

ROOT = Path(__file__).resolve().parent.parent


def run_demo(tmp_path: Path, *args: str) -> str:
    before = set(Path("/tmp").glob("guardia-demo-*"))
    env = {**os.environ, "HOME": str(tmp_path)}  # nothing of the user's is read or written
    for name in ("EXTERNAL_WS_URL", "AGENT_RELAY_TOKEN", "AGENT_CONFIG"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-m", "agent", "demo", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, encoding="utf-8")  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "127.0.0.1:" not in out.split("\n", 2)[2]  # past the banner, no address reaches the room
    assert set(Path("/tmp").glob("guardia-demo-*")) == before
    return out


def test_demo_plays_every_scene_in_korean_and_exits_0(tmp_path: Path) -> None:
    out = run_demo(tmp_path)
    for scene in [
        "👤 kim> help", "🤖 guardia> 📋", "• tail_log — ", "👤 kim> help tail_log",
        "run tail_log host=H dir=app|was|web file=NAME [lines=1..2000]",
        "👤 kim> run disk_usage host=was01", "✅ disk_usage: 호스트 1대 중 1대 성공", "✅ was01 성공 (종료 코드 0,",
        "file=../../etc/shadow", "(INVALID_ARGUMENTS)",
        "잠금 이후 스크립트가 바뀜 (RUNBOOK_NOT_RUNNABLE)",
        "🤖 guardia> ⏳ demo_slow", "⏱️ was01 시간 초과", "제한 시간 2초에 강제 종료됨", "waiting for the batch lock...",
        "👤 kim> history", "kim: demo_slow → was01",
        "🤖 guardia (예약 점검)> 🔴 [was01-every-second]", "🔴 was01_health: 연결 거부 (장애)",
        "남긴 것은 없습니다",
    ]:  # fmt: skip
        assert scene in out, scene
    assert re.search(
        r"\[was01-every-second\] \d{4}-\d{2}-\d{2} \d{2}:\d{2} KST", out
    )  # the report's time, in KST


def test_demo_speaks_english_on_request(tmp_path: Path) -> None:
    out = run_demo(tmp_path, "--language", "en")
    for scene in ["✅ disk_usage: 1 of 1 host succeeded", "its script changed since it was locked (RUNBOOK_NOT_RUNNABLE)",
                  "🔴 was01_health: connection refused (down)", "nothing was left behind"]:  # fmt: skip
        assert scene in out, scene
    assert "성공" not in out


@pytest.mark.parametrize(
    ("line", "packet"),
    [
        ("list", {"action": "LIST_RUNBOOKS"}),
        (
            "run disk_usage host=was01 host=was02 mount=/app",
            {
                "action": "RUN_RUNBOOK",
                "params": {"runbook": "disk_usage", "hosts": ["was01", "was02"], "args": {"mount": "/app"}},
            },
        ),
        (
            "run x host=a 'msg=two words'",
            {
                "action": "RUN_RUNBOOK",
                "params": {"runbook": "x", "hosts": ["a"], "args": {"msg": "two words"}},
            },
        ),
        ("check was", {"action": "RUN_CHECK", "params": {"check": "was"}}),
        (
            "output t-1 was01 2",
            {
                "action": "GET_OUTPUT",
                "params": {"task_id": "t-1", "host": "was01", "stream": "stdout", "page": 1},
            },
        ),
        (
            "output t-1 was01 stderr",
            {
                "action": "GET_OUTPUT",
                "params": {"task_id": "t-1", "host": "was01", "stream": "stderr", "page": 0},
            },
        ),
        ("help", {"action": "HELP", "params": {}}),
        ("help tail_log", {"action": "HELP", "params": {"runbook": "tail_log"}}),
        ("history tail_log 5", {"action": "HISTORY", "params": {"runbook": "tail_log", "limit": 5}}),
        ("pending", {"action": "PENDING"}),
        ("cancel K7P2QX", {"action": "CANCEL", "params": {"code": "K7P2QX"}}),
        ("approve K7P2QX", {"action": "APPROVE", "params": {"code": "K7P2QX"}}),
    ],
)
def test_chat_lines_become_packets(line: str, packet: dict[str, object]) -> None:
    parsed = parse_chat(line, "t-9")
    assert (
        {k: parsed[k] for k in packet} == packet and parsed["task_id"] == "t-9" and parsed["room_id"] == "ops"
    )


@pytest.mark.parametrize(
    "line",
    ["", "run", "run x noequals", "drop table", "list extra", "output t h 0", "output t h x", "help a b",
     "history a b c", "cancel", "run x 'unbalanced"],
)  # fmt: skip
def test_bad_chat_lines_get_a_usage_hint(line: str) -> None:
    with pytest.raises(ValueError):
        parse_chat(line, "t")


@given(st.text(max_size=200))
def test_any_typed_line_becomes_a_packet_or_a_usage_hint(line: str) -> None:
    try:
        packet = parse_chat(line, "t")
    except ValueError:
        return
    assert packet["action"] in {a.value for a in Action} and packet["room_id"] == "ops"
