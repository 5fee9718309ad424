"""What the room reads: each kind of answer rendered in Korean (the default) and English, checked for content.

The messages are made the way the agent makes them (exceptions, check results, scheduler reports as
:class:`~agent.chat.i18n.Msg`), sent through JSON and the redactor like every outbound message, then rendered: so a text
that only worked before redaction or before the outbox would fail here.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.chat.i18n import Chat, Msg, i18n_json, nmsg
from agent.chat.render import FINISHED_RENDERERS, render_finished, render_pending, render_report, render_text
from agent.checks import CheckResult, CheckStatus
from agent.config.schema import COUNT_LIMIT, MES_QC_COUNT_SQL
from agent.errors import InvalidArguments, RunbookNotRunnable
from agent.redaction import Redactor
from agent.runs.results import HostResult, Outcome, RunResult
from agent.session.protocol import Action, ErrorCode, Status, finished_message
from tests.conftest import Operator
from tests.services import HealthServer, free_port
from tests.test_scheduler import start

KST = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} KST")
KO, EN = Chat("ko"), Chat("en")


def wire(payload: dict[str, Any]) -> dict[str, Any]:
    """What the renderer gets: the payload after JSON (the outbox) and redaction (the runtime's choke point)."""
    redacted: dict[str, Any] = Redactor().redact_json(json.loads(json.dumps(payload)))
    return redacted


def refusal(exc: Exception, code: ErrorCode) -> dict[str, Any]:
    message = exc.msg  # type: ignore[attr-defined]
    return wire(finished_message("t", "ops", Status.FAIL, error=(code, message))["payload"])


@pytest.mark.parametrize(
    ("chat", "expected"),
    [
        (KO, ["disk_usage: 호스트 2대 중 1대 성공", "✅ was01 성공 (종료 코드 0, 0.2초)", "연결 거부"]),
        (
            EN,
            [
                "disk_usage: 1 of 2 hosts succeeded",
                "✅ was01 succeeded (exit code 0, 0.2 s)",
                "connection refused",
            ],
        ),
    ],
)
def test_a_run_result(chat: Chat, expected: list[str]) -> None:
    result = RunResult("disk_usage", "0" * 64, [
        HostResult("was01", Outcome.SUCCESS, 0, 0.21, stdout="use=25%\n"),
        HostResult("was02", Outcome.UNREACHABLE, None, 3.0, message=Msg("connection refused")),
    ])  # fmt: skip
    text = render_finished(chat, wire({"status": "FAIL", "data": result.to_json()}), "RUN_RUNBOOK")
    for part in expected:
        assert part in text


@pytest.mark.parametrize(
    ("chat", "expected"),
    [
        (KO, ["❌ 런북 'tail_log' 실행 불가: 잠금 이후 스크립트가 바뀜 (RUNBOOK_NOT_RUNNABLE)",
              "file: 영문자, 숫자와", "mount: 필수 항목", "(INVALID_ARGUMENTS)"]),
        (EN, ["❌ runbook 'tail_log' is not runnable: its script changed since it was locked (RUNBOOK_NOT_RUNNABLE)",
              "file: must be letters, digits", "mount: required"]),
    ],
)  # fmt: skip
def test_a_refusal_keeps_its_code_and_english_message_for_machines(chat: Chat, expected: list[str]) -> None:
    tampered = refusal(
        RunbookNotRunnable("tail_log", Msg("its script changed since it was locked")),
        ErrorCode.RUNBOOK_NOT_RUNNABLE,
    )
    assert tampered["error"]["code"] == "RUNBOOK_NOT_RUNNABLE"
    assert tampered["error"]["message"] == (
        "runbook 'tail_log' is not runnable: its script changed since it was locked"
    )
    bad = refusal(
        InvalidArguments([
            ("file", Msg("must be letters, digits and . _ @ : - (starting with a letter or digit)")),
            ("mount", Msg("required")),
        ]),
        ErrorCode.INVALID_ARGUMENTS,
    )  # fmt: skip
    text = render_finished(chat, tampered, "RUN_RUNBOOK") + "\n" + render_finished(chat, bad, "RUN_RUNBOOK")
    for part in expected:
        assert part in text


@pytest.mark.parametrize(
    ("chat", "words"),
    [(KO, ["점검 결과: 장애", "연결 거부", "타임아웃 (3초 안에 응답 없음)", "정상"]),
     (EN, ["checks: down", "connection refused", "timeout (no answer within 3 s)", "OK"])],
)  # fmt: skip
def test_checks(chat: Chat, words: list[str]) -> None:
    checks = {
        "was01": CheckResult(CheckStatus.DOWN, Msg("connection refused"), {"reason": "CONNECTION_REFUSED"}),
        "was02": CheckResult(
            CheckStatus.DOWN,
            Msg("timeout (no answer within {timeout:g} s)", timeout=3.0),
            {"reason": "TIMEOUT"},
        ),
        "disk": CheckResult(
            CheckStatus.OK, Msg("used {used:.1f}% ({free:.1f} GiB free)", used=41.0, free=12.5)
        ),
    }
    data = {"status": "DOWN", "checks": {name: r.to_json() for name, r in checks.items()}}
    text = render_finished(chat, wire({"status": "FAIL", "data": data}), "RUN_CHECK")
    for word in words:
        assert word in text


@pytest.mark.parametrize(
    ("chat", "cut", "at_least", "whole"),
    [(KO, "10건 표시 (전체 15건)", "10건 표시 (전체 10000건 이상)", "3건"),
     (EN, "10 shown (15 in all)", "10 shown (at least 10000 in all)", "3 items")],
)  # fmt: skip
def test_mes_qc_rows_count_honestly(chat: Chat, cut: str, at_least: str, whole: str) -> None:
    rows = [
        {"work_date": "2026-09-18", "prc_code": f"P{i}", "err_msg": "x", "reg_date": "t"} for i in range(10)
    ]
    data = {"date": "2026-09-18", "rows": rows, "row_count": 10, "truncated": True, "total": 15}
    assert cut in render_finished(chat, wire({"status": "SUCCESS", "data": data}), "FETCH_MES_QC")
    capped = {**data, "total": COUNT_LIMIT, "total_at_least": True}
    assert at_least in render_finished(chat, wire({"status": "SUCCESS", "data": capped}), "FETCH_MES_QC")
    # No count query: only "more than shown" is known.
    unknown = {"date": "d", "rows": rows, "row_count": 10, "truncated": True}
    assert "10" in render_finished(chat, wire({"status": "SUCCESS", "data": unknown}), "FETCH_MES_QC")
    three = {"date": "d", "rows": rows[:3], "row_count": 3, "truncated": False, "total": 3}
    assert whole in render_finished(chat, wire({"status": "SUCCESS", "data": three}), "FETCH_MES_QC")


def test_the_built_in_count_is_bounded_as_documented() -> None:
    assert f"LIMIT {COUNT_LIMIT + 1}" in MES_QC_COUNT_SQL


@pytest.mark.parametrize(
    ("chat", "words"),
    [(KO, ["🔴 was: 연결 거부", "실행 3회를 건너뜀", "에이전트가 멈춘 동안", "요약: 점검 2개 중 비정상: was"]),
     (EN, ["🔴 was: connection refused", "3 runs missed", "summary: 2 checks, not OK: was"])],
)  # fmt: skip
def test_reports_show_kst_times_without_seconds(chat: Chat, words: list[str]) -> None:
    at = dt.datetime(2026, 11, 28, 5, 5, 42, 123456, tzinfo=dt.UTC)
    check = Msg("{check}: {message}", check="was", message=Msg("connection refused"))
    missed = nmsg("{schedule}: {n} run missed while the agent was not running (since {since})",
                  "{schedule}: {n} runs missed while the agent was not running (since {since})", 3,
                  schedule="hourly", since=at)  # fmt: skip
    summary = nmsg("{n} check, not OK: {bad}", "{n} checks, not OK: {bad}", 2, bad="was")
    texts = [
        render_report(
            chat,
            wire({"kind": kind, "status": status, "message": m, "i18n": i18n_json(m), "at": at.timestamp()}),
        )
        for kind, status, m in [
            ("check", "DOWN", check),
            ("missed", "WARN", missed),
            ("summary", "DOWN", summary),
        ]
    ]
    text = "\n".join(texts)
    for word in words:
        assert word in text
    times = KST.findall(text) if chat.language == "ko" else re.findall(r"\d{2}:\d{2} KST", text)
    assert len(times) >= 4 and "14:05 KST" in text and ":42" not in text and ".123" not in text


@pytest.mark.parametrize(
    ("chat", "words"),
    [(KO, ["🔐 승인 필요: service_restart → was01", "요청자 kim", "approve K7PQ2M", "reject K7PQ2M", "10분 안에"]),
     (EN, ["🔐 approval needed: service_restart on was01", "requested by kim", "approve K7PQ2M", "within 10 min"])],
)  # fmt: skip
def test_an_approval_prompt(chat: Chat, words: list[str]) -> None:
    expires = dt.datetime(2026, 11, 28, 5, 15, tzinfo=dt.UTC).timestamp()
    text = render_pending(chat, wire({"code": "K7PQ2M", "runbook": "service_restart", "hosts": ["was01"],
                                      "args": {"service": "tomcat"}, "requested_by": "kim", "expires_in": 600,
                                      "expires_at": expires}))  # fmt: skip
    for word in words:
        assert word in text
    assert "2026-11-28 14:15 KST" in text  # until when, in the room's zone


def test_a_translation_that_does_not_fit_falls_back_to_english_not_a_crash() -> None:
    broken = {"id": "connection refused", "args": {}, "plural": 3, "n": "x"}  # a stored message gone odd
    assert render_report(KO, {"kind": "check", "status": "DOWN", "message": "was: ?", "i18n": broken})
    assert render_report(
        KO, {"kind": "check", "status": "DOWN", "message": "was: ?", "i18n": "nonsense"}
    ).endswith("was: ?")


# -- over the wire: a real relay, PostgreSQL and HTTP server ---------------------------------------------------


@pytest.mark.external_service
@pytest.mark.parametrize(
    ("language", "count", "refused", "timeout"),
    [("ko", "10건 표시 (전체 15건)", "연결 거부", "타임아웃"),
     ("en", "10 shown (15 in all)", "connection refused", "timeout")],
)  # fmt: skip
async def test_the_room_reads_its_language_over_the_wire(
    agent_home: Path, relay: Any, operator: Operator, health: HealthServer, postgres: dict[str, str],
    language: str, count: str, refused: str, timeout: str,
) -> None:  # fmt: skip
    app = await start(agent_home, relay, f"""
[chat]
language = "{language}"

[checks.was_closed]
kind = "http"
url = "http://127.0.0.1:{free_port()}/actuator/health"
[checks.was_slow]
kind = "http"
url = "{health.url("/slow")}"
timeout = 0.3
""", env=postgres)  # fmt: skip
    try:
        await operator.command("FETCH_MES_QC", "m-1", date="2026-09-18")
        mes = (await operator.finished("m-1"))["payload"]
        assert (mes["data"]["row_count"], mes["data"]["total"], mes["data"]["truncated"]) == (10, 15, True)
        assert count in mes["text"]
        await operator.command("FETCH_MES_QC", "m-2", date="2026-09-17")
        one = (await operator.finished("m-2"))["payload"]
        assert (one["data"]["total"], one["data"]["truncated"]) == (1, False)
        for task, check, word, reason in [("c-1", "was_closed", refused, "CONNECTION_REFUSED"),
                                          ("c-2", "was_slow", timeout, "TIMEOUT")]:  # fmt: skip
            await operator.command("RUN_CHECK", task, check=check)
            answer = (await operator.finished(task))["payload"]
            result = answer["data"]["checks"][check]
            assert (result["status"], result["data"]["reason"]) == ("DOWN", reason)
            assert word in answer["text"]
        await operator.command("FETCH_MES_QC", "m-3", date="2026-02-30")
        bad = (await operator.finished("m-3"))["payload"]
        assert bad["error"]["code"] == "INVALID_ARGUMENTS" and "PostgreSQL reads" in bad["error"]["message"]
        assert ("날짜/시간 값이 범위를 벗어남" in bad["text"]) == (language == "ko")
        assert ("datetime field out of range" in bad["text"]) == (language == "en")
    finally:
        await app.stop()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
keys = st.sampled_from(["status", "data", "error", "hosts", "runbook", "checks", "rows", "total", "lines", "page",
                        "pages", "runbooks", "message", "i18n", "at", "kind", "problems", "args", "expires_at",
                        "expires_in", "code", "approved", "truncated", "stdout_cut", "duration", "exit_code"])  # fmt: skip
payloads = st.dictionaries(keys, json_values | st.dictionaries(keys, json_values, max_size=6), max_size=8)


@given(payload=payloads)
def test_renderers_never_raise_on_odd_payloads(payload: dict[str, Any]) -> None:
    for chat in (KO, EN):
        for render in (render_report, render_pending):
            assert isinstance(render(chat, payload), str)
        for action in (*FINISHED_RENDERERS, None, "NO_SUCH_ACTION"):
            assert isinstance(render_finished(chat, payload, action), str)
        for kind in ("agent", "schedule", "summary", "catalog", "check", None):  # every report layout
            assert isinstance(render_text(chat, "REPORT", {**payload, "kind": kind}), str)
        assert isinstance(render_text(chat, "TASK_PROGRESS", payload), str)
        assert render_text(chat, "AGENT_HELLO", payload) is None


def test_every_action_has_its_own_renderer_and_none_guesses_from_keys() -> None:
    """Each action's answer is rendered by the action's renderer: a LIST_RUNBOOKS answer that happens to carry
    ``hosts`` and ``runbook`` (as a run's does) is still a list, and an unknown action shows its status only."""
    assert set(FINISHED_RENDERERS) == {action.value for action in Action}
    looks_like_a_run = {
        "runbooks": [{"name": "disk_usage", "description": "df"}],
        "hosts": [],
        "runbook": "x",
    }
    listed = render_finished(EN, wire({"status": "SUCCESS", "data": looks_like_a_run}), "LIST_RUNBOOKS")
    assert listed.startswith("📋") and "disk_usage — df" in listed
    assert render_finished(EN, wire({"status": "SUCCESS", "data": looks_like_a_run}), None) == "✅ succeeded"
