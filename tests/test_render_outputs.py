"""Chat-ready text (neutralised markup) and the full output kept on the agent PC (GET_OUTPUT)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.chat.i18n import Chat
from agent.chat.render import ZWSP, neutralize, render_finished, render_report
from agent.runs.outputs import key_of
from agent.shell.runtime import AgentRuntime
from tests.conftest import Operator, RunningApp

HOSTILE = "@all see https://evil.example/x <!channel> [click](http://x) ```\nrm -rf /\n```"


def test_neutralize_breaks_mentions_links_and_fences() -> None:
    text = neutralize(HOSTILE)
    assert "@all" not in text and "://" not in text and "<!" not in text  # a [link](…) dies with its ://
    assert "```" not in text
    assert text.replace(ZWSP, "") == HOSTILE  # nothing is lost, only broken up


def test_rendered_run_shows_head_tail_what_was_left_out_and_the_paging_command() -> None:
    data = {
        "runbook": "disk_usage", "status": "TIMEOUT", "page_lines": 200,
        "hosts": [
            {"host": "was01", "status": "SUCCESS", "exit_code": 0, "duration": 0.21,
             "stdout": "".join(f"line {i}\n" for i in range(1, 261)) + HOSTILE, "stdout_lines": 263,
             "stderr": "a warning nobody needs on success"},
            {"host": "was02", "status": "TIMEOUT", "exit_code": None, "duration": 30.0, "stdout": "",
             "stderr": "partial", "message": "killed at the 30 s time limit", "truncated": True,
             "stdout_cut": 2048, "stderr_cut": 0},
        ],
        "output_ref": "t-1",
    }  # fmt: skip
    text = render_finished(Chat("en"), {"status": "FAIL", "data": data}, "RUN_RUNBOOK")
    assert text.startswith("⏱️ disk_usage: 1 of 2 hosts succeeded")
    assert "✅ was01 succeeded (exit code 0, 0.2 s)" in text
    assert "⏱️ was02 timed out (30.0 s) — killed at" in text
    assert "@all" not in text and "https://" not in text
    shown = [n for n in range(1, 261) if f"line {n}\n" in text]
    assert shown == [1, 2, 3, 4, 5, 254, 255, 256, 257, 258, 259, 260]  # head 5, tail 10 (3 of them hostile)
    left_out = next(line for line in text.splitlines() if "248" in line)  # the line saying what was left out
    assert "6–253" in left_out and "output t-1 was01 1" in text  # …and the exact command that pages the rest
    assert "a warning nobody needs" not in text  # stderr of a success with stdout stays out
    assert "partial" in text  # stderr of the failed host with empty stdout is shown
    korean = render_finished(Chat(), {"status": "FAIL", "data": data}, "RUN_RUNBOOK")
    assert "248줄 생략 (6–253번째 줄)" in korean and "전체 출력 보기: output t-1 was01 1" in korean


def test_stderr_is_shown_when_the_run_failed_even_with_stdout() -> None:
    host = {"host": "h", "status": "FAIL", "exit_code": 2, "stdout": "some output", "stderr": "the reason"}
    text = render_finished(
        Chat("en"),
        {"status": "FAIL", "data": {"runbook": "x", "status": "FAIL", "hosts": [host]}},
        "RUN_RUNBOOK",
    )
    assert "some output" in text and "the reason" in text


def test_rendered_refusal_and_report() -> None:
    refusal = render_finished(
        Chat("en"), {"status": "FAIL", "error": {"code": "ROOM_NOT_ALLOWED", "message": "no @here"}}, None
    )
    assert refusal == f"❌ no @{ZWSP}here (ROOM_NOT_ALLOWED)"
    assert (
        render_report(Chat("en"), {"kind": "check", "status": "DOWN", "message": "was: HTTP 503"})
        == "🔴 was: HTTP 503"
    )
    assert render_report(
        Chat("en"), {"kind": "check", "status": "OK", "recovered": True, "message": "was recovered"}
    ).startswith("✅")


async def test_text_is_rendered_after_redaction(running_agent: RunningApp) -> None:
    service: AgentRuntime = running_agent.app.runtime
    message = {
        "event": "TASK_FINISHED",
        "msg_id": "m",
        "task_id": "t",
        "room_id": "ops",
        "payload": {
            "status": "FAIL",
            "error": {"code": "INTERNAL", "message": "postgresql://app:s3cr3t@db/x"},
        },
    }
    out = service.outbound(message)
    assert "s3cr3t" not in out["payload"]["text"] and "[REDACTED]" in out["payload"]["text"]


async def get_output(operator: Operator, task: str, params: dict[str, object]) -> None:
    await operator.send({"action": "GET_OUTPUT", "task_id": task, "room_id": "ops", "params": params})


@pytest.mark.external_service
async def test_get_output_pages_through_a_large_stored_output(
    running_agent: RunningApp, operator: Operator
) -> None:
    await operator.command("RUN_RUNBOOK", "big-1", runbook="flood", hosts=["h1"], args={"bytes": 300_000})
    finished = (await operator.finished("big-1"))["payload"]
    host = finished["data"]["hosts"][0]
    assert host["truncated"] and len(host["stdout"].encode()) <= 65536 + 64
    assert finished["data"]["output_ref"] == "big-1" and "output big-1 h1 1" in finished["text"]
    left_out = host["stdout_lines"] - 5 - 10  # what the head (5) and the tail (10) did not show
    assert f"… {left_out}" in finished["text"] and f"6–{5 + left_out}" in finished["text"]
    pages, page, collected = None, 0, []
    while pages is None or page < pages:
        await get_output(operator, f"page-{page}", {"task_id": "big-1", "host": "h1", "page": page})
        data = (await operator.finished(f"page-{page}"))["payload"]["data"]
        pages = data["pages"]
        collected.append(data["lines"])
        page += 1
    whole = "\n".join(collected)
    assert pages > 1 and whole.startswith("FIRST LINE") and whole.endswith("LAST LINE")
    assert len(whole.splitlines()) > 5000 and "hunter22" not in whole and "[REDACTED]" in whole
    for task, params, code in [
        ("bad-1", {"task_id": "big-1", "host": "h1", "page": 10_000}, "INVALID_ARGUMENTS"),
        ("bad-2", {"task_id": "nope", "host": "h1"}, "NOT_AVAILABLE"),
        ("bad-3", {"task_id": "big-1", "host": "../../etc/passwd"}, "INVALID_ARGUMENTS"),
        ("bad-4", {"task_id": "big-1", "host": "h1", "stream": "/etc/shadow"}, "INVALID_ARGUMENTS"),
    ]:
        await get_output(operator, task, params)
        assert (await operator.finished(task))["payload"]["error"]["code"] == code
    kept = running_agent.app.config.path(running_agent.app.config.state.dir) / "outputs"
    assert (kept / key_of("big-1")).is_dir() and not (kept / "big-1").exists()  # named by digest, not by id


@given(st.lists(st.sampled_from([*"@ab :/<`\n\t", "@all", "@here", "://"]), max_size=40).map("".join))
def test_neutralised_text_has_no_mention_link_or_fence_left(text: str) -> None:
    out = neutralize(text)
    assert re.search(r"@(?!\u200b)\S", out) is None and "://" not in out and "```" not in out
    assert out.replace(ZWSP, "") == text  # only zero-width spaces were added
