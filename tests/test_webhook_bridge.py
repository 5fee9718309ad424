"""The webhook bridge (`agent bridge`, agent/reference/webhook.py): a messenger drives the relay.

Against the real relay and a real agent (real sshd hosts), with real HTTP on loopback both ways: the messenger's
requests are the exact shapes of the public docs (Mattermost's outgoing webhook, form and JSON; Mattermost's slash
command with its ``Authorization: Token`` header; Slack's slash command with its request signature), and the
messenger's incoming webhooks are a small HTTP server here that records every post. What reaches the room is
checked against what `agent chat` prints for the same events (agent/reference/chat.py's ChatSession).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.chat.i18n import Chat
from agent.cli import main
from agent.reference.chat import ChatSession, agent_lines, parse_chat, text_of
from agent.reference.operator_client import OperatorClient
from agent.reference.relay import OperatorCredential, Relay, RelaySettings
from agent.reference.webhook import (
    COMMAND_WORDS,
    FINAL,
    NOTICE,
    PROGRESS,
    PROMPT,
    Bridge,
    PostOutcome,
    RoomOutbox,
    RoomRoute,
    classify,
    fit,
    load_bridge_config,
    request_fields,
    slack_signature_valid,
)
from tests.conftest import RELAY_TOKEN, ROOT, RunningApp, agent_environ
from tests.waiting import eventually

OPERATOR_TOKEN = "bridge-operator-token-0123456789"
MM_TOKEN = "zmigewsanbbsdf59xnmduzypjc"  # a Mattermost outgoing webhook's token (the docs' example)
MM_SLASH_TOKEN = "okwexkjpe7ygb8eq1ww58t483w"  # a Mattermost slash command's token
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # a Slack app's signing secret
KIM, LEE = "rnina9994bde8mua79zqcg5hmo", "aoa1agao6t8fmx3ikt1j9w5ybw"  # messenger user ids
SLACK_KIM = "U2147483697"
OPS, OPS_B = "hawos4dqtby53pd64o4a4cmeoo", "jux16pkewjrkfj3ehep1psxyxc"  # messenger channel ids
SLACK_OPS = "C2147483705"


# -- the messenger's incoming webhooks --------------------------------------------------------------------------


@dataclass
class Hook:
    """One incoming webhook: ``ok`` (200 "ok"), ``down`` (503) or ``hang`` (never answers until released)."""

    mode: str = "ok"
    posts: list[str] = field(default_factory=list)
    tries: int = 0
    hanging: int = 0


class Messenger:
    """The messenger's side that takes posts: ``POST /hooks/NAME`` with ``{"text": …}``, like Mattermost's and
    Slack's incoming webhooks."""

    def __init__(self, *names: str) -> None:
        self.hooks = {name: Hook() for name in names}
        self.lock = threading.Lock()
        self.release = threading.Event()
        messenger = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook = messenger.hooks[self.path.rsplit("/", 1)[-1]]
                with messenger.lock:
                    hook.tries += 1
                    mode = hook.mode
                if mode == "hang":
                    with messenger.lock:
                        hook.hanging += 1
                    messenger.release.wait(60)
                    return
                if mode == "down":
                    self.send_response(503)
                    self.end_headers()
                    return
                assert self.headers["Content-Type"].startswith("application/json")
                with messenger.lock:
                    hook.posts.append(json.loads(body)["text"])
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{name}"

    def posts(self, name: str) -> list[str]:
        with self.lock:
            return list(self.hooks[name].posts)

    def set(self, name: str, mode: str) -> None:
        with self.lock:
            self.hooks[name].mode = mode

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


# -- the bridge's config --------------------------------------------------------------------------------------


def write_config(folder: Path, relay_port: int, **messenger: Any) -> Path:
    extra = "".join(f"{key} = {json.dumps(value)}\n" for key, value in messenger.items())
    text = f"""
[listen]
port = 0
path = "/hooks/guardia"

[relay]
url = "ws://127.0.0.1:{relay_port}/operator"
token_env = "BRIDGE_RELAY_TOKEN"

[messenger]
token_env = ["MM_OUTGOING_TOKEN", "MM_SLASH_TOKEN"]
signing_secret_env = "SLACK_SIGNING_SECRET"
retry_min = 0.02
retry_max = 0.1
{extra}
[rooms.{OPS}]
room = "ops"
webhook_env = "HOOK_OPS"

[rooms.{OPS_B}]
room = "ops-b"
webhook_env = "HOOK_OPS_B"

[rooms.{SLACK_OPS}]
room = "slack-ops"
webhook_file = "secrets/slack-ops.url"

[users]
{KIM} = "kim"
{LEE} = "lee"
{SLACK_KIM} = "kim"
"""
    (folder / "secrets").mkdir(exist_ok=True)
    config = folder / "bridge.toml"
    config.write_text(text, encoding="utf-8", newline="\n")
    return config


def environ_for(messenger: Messenger, folder: Path) -> dict[str, str]:
    (folder / "secrets" / "slack-ops.url").write_text(messenger.url("slack-ops") + "\n", encoding="utf-8")
    return {
        "BRIDGE_RELAY_TOKEN": OPERATOR_TOKEN,
        "MM_OUTGOING_TOKEN": MM_TOKEN,
        "MM_SLASH_TOKEN": MM_SLASH_TOKEN,
        "SLACK_SIGNING_SECRET": SLACK_SECRET,
        "HOOK_OPS": messenger.url("ops"),
        "HOOK_OPS_B": messenger.url("ops-b"),
    }


# -- the messenger's requests, as its public docs show them -------------------------------------------------


def mattermost_outgoing(
    text: str, channel: str = OPS, user: str = KIM, token: str = MM_TOKEN
) -> dict[str, str]:
    """Mattermost's outgoing webhook (developers.mattermost.com/integrate/webhooks/outgoing/): every field of the
    documented request, the trigger word first in ``text``."""
    return {
        "channel_id": channel, "channel_name": "town-square", "team_domain": "someteam",
        "team_id": "kwoknj9nwpypzgzy78wkw516qe", "post_id": "axdygg1957njfe5pu38saikdho",
        "text": "guardia " + text, "timestamp": "1445532266", "token": token, "trigger_word": "guardia",
        "user_id": user, "user_name": "somename", "file_ids": "znana9194bde8mua70zqcg5hmo",
    }  # fmt: skip


def mattermost_slash(text: str, channel: str = OPS, user: str = KIM) -> dict[str, str]:
    """Mattermost's custom slash command (developers.mattermost.com/integrate/slash-commands/custom/)."""
    return {
        "channel_id": channel, "channel_name": "town-square", "command": "/guardia",
        "response_url": "http://localhost:8065/hooks/commands/xbrkb8p393gjpq5cawei7npije", "team_domain": "test",
        "team_id": "carya1qs77bemjup96ff538snh", "text": text, "token": MM_SLASH_TOKEN,
        "trigger_id": "NG1kM3lyN2NqYmQxcGNyc2s0Nmo5em0xb2M", "user_id": user, "user_name": "somename",
    }  # fmt: skip


def slack_slash(text: str, channel: str = SLACK_OPS, user: str = SLACK_KIM) -> dict[str, str]:
    """Slack's slash command (docs.slack.dev, "Implementing slash commands"): its form fields; the deprecated
    verification token is not one the bridge knows, so only the request signature can make it pass."""
    return {
        "token": "gIkuvaNzQIHg97ATvDxqgjtO", "team_id": "T0001", "team_domain": "example",
        "enterprise_id": "E0001", "enterprise_name": "Globular%20Construct%20Inc", "channel_id": channel,
        "channel_name": "test", "user_id": user, "user_name": "Steve", "command": "/guardia", "text": text,
        "response_url": "https://hooks.slack.com/commands/1234/5678", "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "api_app_id": "A123456",
    }  # fmt: skip


def slack_headers(body: bytes, secret: str = SLACK_SECRET, at: float | None = None) -> dict[str, str]:
    stamp = str(int(time.time() if at is None else at))
    digest = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=" + digest}


FORM = {"Content-Type": "application/x-www-form-urlencoded"}
#: The room's line when the queue had to leave posts out (the bridge's Korean catalog).
LEFT_OUT = "⚠️ 메신저가 게시물을 받지 못하는 동안 이 방의 게시물 {n}건이 생략되었습니다 (진행 상황과 알림부터). 'history'로 모든 실행을 볼 수 있습니다."


async def http_post(
    port: int, body: bytes, headers: dict[str, str], path: str = "/hooks/guardia"
) -> requests.Response:
    url = f"http://127.0.0.1:{port}{path}"
    return await asyncio.to_thread(requests.post, url, data=body, headers=headers, timeout=30)


def form(fields: dict[str, str]) -> bytes:
    return urlencode(fields).encode()


# -- the stack: relay, agent, bridge, messenger -------------------------------------------------------------


@dataclass
class Stack:
    relay: Relay
    bridge: Bridge
    port: int
    messenger: Messenger
    observer: OperatorClient

    def bridge_tasks(self, room: str = "ops") -> list[dict[str, Any]]:
        """The final answers, in order, of the commands the bridge sent into ``room`` (as the relay forwarded)."""
        return [e for e in self.observer.events if e.get("event") == "TASK_FINISHED" and e.get("room_id") == room
                and str(e.get("task_id")).startswith("bridge-")]  # fmt: skip

    async def finals(self, n: int, room: str = "ops") -> list[dict[str, Any]]:
        await eventually(lambda: len(self.bridge_tasks(room)) >= n, 60, what=f"{n} answer(s) in {room}")
        return self.bridge_tasks(room)


async def start_stack(
    agent_home: Path,
    folder: Path,
    relay: Relay | None = None,
    observer_token: str = OPERATOR_TOKEN,
    **messenger_settings: Any,
) -> tuple[Stack, RunningApp, Messenger]:
    """Relay, agent, messenger and bridge; the observer is the test's own operator connection, seeing every room."""
    relay = relay or Relay(agent_token=RELAY_TOKEN, operator_token=OPERATOR_TOKEN)
    relay.port = await relay.start("127.0.0.1", 0)  # type: ignore[attr-defined]
    app = RunningApp.of(agent_home / "agent.toml", agent_environ(relay))
    await asyncio.wait_for(relay.agent_connected.wait(), 10)
    messenger = Messenger("ops", "ops-b", "slack-ops")
    config = load_bridge_config(
        write_config(folder, relay.port, **messenger_settings),  # type: ignore[attr-defined]
        environ_for(messenger, folder),
    )
    bridge = Bridge(config)
    port = await bridge.start()
    observer = await OperatorClient.connect(f"ws://127.0.0.1:{relay.port}/operator", token=observer_token)  # type: ignore[attr-defined]
    await eventually(lambda: bridge.link.connected, 10, what="the bridge connected to the relay")
    return Stack(relay, bridge, port, messenger, observer), app, messenger


@pytest.fixture
async def stack(agent_home: Path, tmp_path: Path) -> AsyncIterator[Stack]:
    running, app, messenger = await start_stack(agent_home, tmp_path / "bridge-home")
    yield running
    messenger.release.set()
    await running.bridge.stop(grace=0.5)
    await running.observer.close()
    await app.stop()
    await running.relay.stop()
    messenger.close()


@pytest.fixture(autouse=True)
def _bridge_home(tmp_path: Path) -> None:
    (tmp_path / "bridge-home").mkdir()


class Replay:
    """The operator client `agent chat` would have had: the events the relay forwarded, handed over as it sends."""

    def __init__(self, recorded: list[dict[str, Any]]) -> None:
        self.events: list[dict[str, Any]] = []
        self._recorded = recorded

    async def send(self, packet: Any) -> None:
        self.events.extend(self._recorded)

    async def wait_beyond(self, count: int) -> None:
        assert len(self.events) > count, "the recorded events ran out before the command's final answer"


async def agent_chat_prints(
    events: list[dict[str, Any]], task_id: str, line: str, room: str, echo: bool
) -> str:
    """What `agent chat --room ROOM --user kim LINE` prints for the command ``task_id``, given these events."""
    out = io.StringIO()
    session = ChatSession(Replay(events), room, "kim", out, new_task_id=lambda: task_id)  # type: ignore[arg-type]
    await session.ask(line, echo=echo)
    return out.getvalue()


def as_transcript(posts: list[str]) -> str:
    """The room's posts as `agent chat` lays them out: a command's echo as it is, the rest as what guardia said."""
    return "".join((p if p.startswith("👤 ") else agent_lines(p)) + "\n" for p in posts)


# -- a messenger drives the relay -----------------------------------------------------------------------------

#: Needs the real sshd hosts of tests/conftest.py (the agent runs runbooks on them).
external = pytest.mark.external_service


@external
async def test_a_mattermost_outgoing_webhook_runs_a_runbook_and_the_room_sees_what_agent_chat_shows(
    stack: Stack,
) -> None:
    line = "run echo_args host=web value=hi"
    reply = await http_post(stack.port, form(mattermost_outgoing(line)), FORM)
    # The line is in the channel already: the bridge answers the outgoing webhook with nothing to post.
    assert reply.status_code == 200 and reply.json() == {}
    [final] = await stack.finals(1)
    assert final["payload"]["status"] == "SUCCESS"
    posted = await eventually(lambda: stack.messenger.posts("ops"), 20, what="the answer posted to #ops")
    assert posted == [text_of(final)]
    # The agent's Korean text, its output in a code block the messenger renders, exactly as `agent chat` shows it.
    assert "성공" in posted[0] and "```" in posted[0]
    shown = await agent_chat_prints(stack.observer.events, final["task_id"], line, "ops", echo=False)
    assert shown == as_transcript(posted)
    assert stack.messenger.posts("ops-b") == [] and stack.messenger.posts("slack-ops") == []


@external
async def test_slash_commands_of_slack_and_mattermost_are_echoed_then_answered_in_their_own_channel(
    stack: Stack,
) -> None:
    line = "run echo_args host=web value=hi"
    body = form(slack_slash(line))
    reply = await http_post(stack.port, body, {**FORM, **slack_headers(body)})
    assert reply.status_code == 200
    ack = reply.json()
    # Only the person who typed it sees the acknowledgement.
    assert ack["response_type"] == "ephemeral" and "slack-ops" in ack["text"]
    [final] = await stack.finals(1, room="slack-ops")
    posted = await eventually(
        lambda: len(stack.messenger.posts("slack-ops")) >= 2 and stack.messenger.posts("slack-ops"), 20
    )
    # The room did not see the slash command: its line comes first, then the answer, as in `agent chat`.
    assert posted == ["👤 kim> " + line, text_of(final)]
    transcript = await agent_chat_prints(
        stack.observer.events, final["task_id"], line, "slack-ops", echo=True
    )
    assert transcript == as_transcript(posted)

    # Mattermost's slash command carries its token in a header too; JSON bodies are read as well.
    mm = mattermost_slash("help echo_args")
    reply = await http_post(stack.port, json.dumps(mm).encode(), {"Content-Type": "application/json",
                            "Authorization": f"Token {MM_SLASH_TOKEN}"})  # fmt: skip
    assert reply.status_code == 200 and reply.json()["response_type"] == "ephemeral"
    [help_answer] = await stack.finals(1, room="ops")
    posted = await eventually(
        lambda: len(stack.messenger.posts("ops")) >= 2 and stack.messenger.posts("ops"), 20
    )
    assert posted == ["👤 kim> help echo_args", text_of(help_answer)]
    assert "run echo_args host=H" in posted[1]


@external
async def test_a_bad_token_an_unknown_channel_or_user_or_a_bad_line_sends_nothing_and_says_why(
    stack: Stack,
) -> None:
    line = "run echo_args host=web value=hi"
    refused = []
    for fields, headers in [
        (mattermost_outgoing(line, token="not-the-token"), FORM),
        ({k: v for k, v in mattermost_outgoing(line).items() if k != "token"}, FORM),
    ]:
        refused.append(await http_post(stack.port, form(fields), headers))
    body = form(slack_slash(line))
    refused.append(
        await http_post(stack.port, body, {**FORM, **slack_headers(body, secret="another-secret")})
    )
    refused.append(await http_post(stack.port, body, {**FORM, **slack_headers(body, at=time.time() - 3600)}))
    tampered = form(slack_slash("run echo_args host=web value=evil"))
    refused.append(await http_post(stack.port, tampered, {**FORM, **slack_headers(body)}))
    assert [r.status_code for r in refused] == [401] * 5

    unknown_channel = await http_post(stack.port, form(mattermost_outgoing(line, channel="elsewhere")), FORM)
    unknown_user = await http_post(stack.port, form(mattermost_outgoing(line, user="mallory")), FORM)
    bad_line = await http_post(stack.port, form(mattermost_outgoing("frobnicate now")), FORM)
    unbalanced = await http_post(
        stack.port, form(mattermost_outgoing("run echo_args host=web 'value=hi")), FORM
    )
    assert [r.status_code for r in (unknown_channel, unknown_user, bad_line, unbalanced)] == [200] * 4
    assert "GUARDiA 방" in unknown_channel.json()["text"] and "elsewhere" in unknown_channel.json()["text"]
    assert "[users]" in unknown_user.json()["text"] and "mallory" in unknown_user.json()["text"]
    assert bad_line.json()["text"].startswith("❌ 'frobnicate'은 없는 명령입니다")
    assert unbalanced.json()["text"] == "❌ 따옴표가 짝이 맞지 않음"
    # An outgoing webhook without a trigger word sees every message of the channel, its own answers included
    # (Mattermost passes a webhook's answer to the outgoing webhooks): conversation is left alone, never answered.
    for chatter in ["좋은 아침입니다", bad_line.json()["text"], unknown_user.json()["text"]]:
        quiet = await http_post(
            stack.port, form({**mattermost_outgoing(""), "text": chatter, "trigger_word": ""}), FORM
        )
        assert quiet.status_code == 200 and quiet.json() == {}
    assert stack.bridge.sent == 0

    # Then a good one: its answer is the only thing the room and the relay's operators ever see.
    ok = await http_post(stack.port, form(mattermost_outgoing(line)), FORM)
    assert ok.status_code == 200
    [final] = await stack.finals(1)
    posted = await eventually(lambda: stack.messenger.posts("ops"), 20)
    assert posted == [text_of(final)] and stack.bridge.sent == 1
    assert [e["task_id"] for e in stack.observer.events if str(e.get("task_id")).startswith("bridge-")
            and e.get("event") == "TASK_FINISHED"] == [final["task_id"]]  # fmt: skip


@external
async def test_a_messenger_that_is_down_then_back_gets_every_answer_in_order(stack: Stack) -> None:
    stack.messenger.set("ops", "down")
    for value in ("v1", "v2", "v3"):
        reply = await http_post(
            stack.port, form(mattermost_outgoing(f"run echo_args host=h1 value={value}")), FORM
        )
        assert reply.status_code == 200
        await stack.finals(int(value[1]))
    await eventually(lambda: stack.messenger.hooks["ops"].tries >= 3, 20, what="posts tried while it is down")
    assert stack.messenger.posts("ops") == []
    stack.messenger.set("ops", "ok")
    finals = stack.bridge_tasks()
    posted = await eventually(
        lambda: len(stack.messenger.posts("ops")) >= 3 and stack.messenger.posts("ops"), 20
    )
    assert posted == [text_of(f) for f in finals]  # nothing lost, in the order the room said them
    # ... which is the order they were typed in (echo_args prints each value base64-encoded).
    for post, value in zip(posted, ("v1", "v2", "v3"), strict=True):
        assert base64.b64encode(value.encode()).decode() in post


@external
async def test_a_webhook_that_never_answers_does_not_delay_another_rooms_posts(
    agent_home: Path, tmp_path: Path
) -> None:
    running, app, messenger = await start_stack(agent_home, tmp_path / "bridge-home", timeout=120)
    try:
        messenger.set("ops-b", "hang")
        reply = await http_post(running.port, form(mattermost_outgoing("help", channel=OPS_B)), FORM)
        assert reply.status_code == 200
        await running.finals(1, room="ops-b")
        await eventually(lambda: messenger.hooks["ops-b"].hanging == 1, 20, what="ops-b's post hanging")

        reply = await http_post(
            running.port, form(mattermost_outgoing("run echo_args host=web value=hi")), FORM
        )
        assert reply.status_code == 200
        [final] = await running.finals(1)
        posted = await eventually(lambda: messenger.posts("ops"), 20, what="#ops's answer while #ops-b hangs")
        assert posted == [text_of(final)]
        assert messenger.hooks["ops-b"].hanging == 1 and messenger.posts("ops-b") == []  # still hanging
    finally:
        messenger.release.set()
        await running.bridge.stop(grace=0.5)
        await running.observer.close()
        await app.stop()
        await running.relay.stop()
        messenger.close()


@external
async def test_with_an_operator_credential_scoped_to_its_rooms_the_relays_refusal_reaches_the_channel(
    agent_home: Path, tmp_path: Path
) -> None:
    """The relay's `[operators.NAME] rooms/users`: the bridge's credential names two of its three rooms and one user.
    A command for another room, or as another user, is refused by the relay, and that refusal is the channel's answer;
    frames of rooms the credential does not name never reach the bridge at all."""
    settings = RelaySettings(operators={
        "bridge": OperatorCredential(token_env="BRIDGE_OPERATOR_TOKEN", rooms=["ops", "ops-b"], users=["kim"]),
        "observer": OperatorCredential(token_env="OBSERVER_TOKEN", rooms=["*"]),
    })  # fmt: skip
    environ = {"BRIDGE_OPERATOR_TOKEN": OPERATOR_TOKEN, "OBSERVER_TOKEN": "observer-token-0123456789"}
    relay = Relay(agent_token=RELAY_TOKEN, settings=settings, environ=environ)
    running, app, messenger = await start_stack(
        agent_home, tmp_path / "bridge-home", relay, observer_token=environ["OBSERVER_TOKEN"]
    )
    seen: list[dict[str, Any]] = []
    deliver = running.bridge.from_relay
    running.bridge.link._on_frame = lambda frame: (seen.append(json.loads(frame)), deliver(frame))  # type: ignore[method-assign]
    try:
        line = "run echo_args host=web value=hi"
        body = form(slack_slash(line))  # slack-ops: mapped by the bridge, not named by its credential
        assert (await http_post(running.port, body, {**FORM, **slack_headers(body)})).status_code == 200
        as_lee = await http_post(running.port, form(mattermost_outgoing(line, channel=OPS_B, user=LEE)), FORM)
        assert as_lee.status_code == 200
        refused = await eventually(lambda: messenger.posts("slack-ops")[1:] and messenger.posts("ops-b"), 20)
        assert "(NOT_ALLOWED)" in messenger.posts("slack-ops")[1] and "(NOT_ALLOWED)" in refused[0]
        # Someone else's command in a room the bridge's credential does not name: the bridge never sees it.
        await running.observer.send(parse_chat("help", "other-1", "ops-c", "kim"))
        await running.observer.finished("other-1")
        ok = await http_post(running.port, form(mattermost_outgoing(line)), FORM)
        assert ok.status_code == 200
        [final] = await running.finals(1)
        assert await eventually(lambda: messenger.posts("ops"), 20) == [text_of(final)]
        assert final["payload"]["status"] == "SUCCESS"
        assert {e.get("room_id") for e in seen} <= {"ops", "ops-b", "slack-ops"} and seen
    finally:
        await running.bridge.stop(grace=0.5)
        await running.observer.close()
        await app.stop()
        await running.relay.stop()
        messenger.close()


# -- the queue: bounded, never a final answer lost ------------------------------------------------------------


async def test_a_full_queue_leaves_out_the_oldest_progress_first_never_a_final_answer_and_tells() -> None:
    delivered: list[str] = []
    tries: list[str] = []
    up = threading.Event()

    def post(text: str) -> PostOutcome:
        tries.append(text)
        if not up.is_set():
            return PostOutcome(False, True, "HTTP 503: down", 503)
        delivered.append(text)
        return PostOutcome(True, False, "delivered", 200)

    executor = ThreadPoolExecutor(1)
    box = RoomOutbox(RoomRoute("c", "ops", "http://127.0.0.1:9/"), post, Chat("ko"), executor, limit=5,
                     retry=(0.01, 0.02))  # fmt: skip
    puts = [("final 1", FINAL)] + [(f"progress {i}", PROGRESS) for i in range(1, 9)]
    for text, kind in puts:
        box.put(text, kind)
    assert [p.text for p in box.items] == ["final 1", "progress 5", "progress 6", "progress 7", "progress 8"]
    puts = [("report 1", NOTICE), ("approve K7P2QX?", PROMPT), ("final 2", FINAL), ("progress 9", PROGRESS)]
    puts += [("report 2", NOTICE)] + [(f"final {i}", FINAL) for i in range(3, 7)]
    for text, kind in puts:
        box.put(text, kind)
    kept = [p.text for p in box.items]
    # Finals and the approval prompt are all kept, past the bound; the progress lines went first, then reports.
    assert kept == ["final 1", "approve K7P2QX?", "final 2", "final 3", "final 4", "final 5", "final 6"]
    assert box.dropped == 18 - len(kept) == 11
    assert box.backlog() == 7  # new commands for this room are refused until the messenger takes these

    sender = asyncio.create_task(box.run())
    try:
        await eventually(lambda: len(tries) >= 3, 5)  # it keeps trying while the messenger is down
        assert box.dropped == 11 and [p.text for p in box.items] == kept  # nothing goes while none is taken
        up.set()
        await eventually(lambda: len(delivered) == 8, 10, what="everything delivered")
        assert delivered[0] == LEFT_OUT.format(n=11)
        assert delivered[1:] == kept
    finally:
        sender.cancel()
        executor.shutdown(wait=False)


def test_incoming_webhook_answers_are_read_as_the_messengers_mean_them() -> None:
    assert classify(200).delivered and not classify(200).retry
    assert classify(503).retry and classify(429, "7").retry_after == 7.0
    assert not classify(400).retry and not classify(413).retry  # this post is refused: not tried for ever
    # A URL the messenger refuses may be fixed on its side: the posts wait.
    assert classify(404).retry and "refuses this webhook URL" in classify(404).reason


def test_a_long_text_is_cut_at_a_line_with_its_code_block_closed_and_says_so() -> None:
    text = "✅ echo_args\n```\n" + "\n".join(f"line {i}" for i in range(5000)) + "\n```"
    cut = fit(text, 1000, Chat("ko"))
    assert len(cut) <= 1000 and cut.count("```") % 2 == 0
    assert cut.startswith("✅ echo_args\n```\nline 0\n") and "output" in cut.splitlines()[-1]
    assert fit("short", 1000, Chat("ko")) == "short"


# -- any request: a clear answer, never a traceback -----------------------------------------------------------


class FakeLink:
    def __init__(self) -> None:
        self.packets: list[dict[str, Any]] = []
        self.connected = True

    async def send(self, packet: dict[str, Any]) -> bool:
        json.dumps(packet, ensure_ascii=False).encode("utf-8")  # what the real link does with it
        self.packets.append(packet)
        return True


@pytest.fixture(scope="module")
def offline_bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    folder = tmp_path_factory.mktemp("bridge")
    (folder / "secrets").mkdir()
    messenger = Messenger("ops", "ops-b", "slack-ops")
    try:
        config = load_bridge_config(write_config(folder, 9), environ_for(messenger, folder))
        bridge = Bridge(config)
        yield bridge
    finally:
        messenger.close()


def is_command(text: str) -> bool:
    words = text.translate(str.maketrans("\u201c\u201d\u2018\u2019", "\"\"''")).split()
    return bool(words) and words[0].lower() in COMMAND_WORDS


def run(coroutine: Any) -> Any:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


FIELD_NAMES = st.sampled_from(
    ["token", "channel_id", "user_id", "text", "trigger_word", "command", "ssl_check", "api_app_id"]
)
ANY_TEXT = st.text(max_size=80)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
    kind=st.sampled_from(
        [
            "application/json",
            "application/x-www-form-urlencoded",
            "",
            "text/plain",
            "application/json; charset=utf-8",
        ]
    ),
)
def test_any_body_gets_a_clear_answer_never_a_traceback(
    offline_bridge: Bridge, body: bytes, kind: str
) -> None:
    offline_bridge.link = FakeLink()  # type: ignore[assignment]
    reply = run(offline_bridge.answer({"content-type": kind} if kind else {}, body))
    assert reply.status in (200, 400, 401)
    assert reply.body.decode("utf-8")
    assert offline_bridge.link.packets == []  # type: ignore[attr-defined]  # no token: nothing sent


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    extra=st.dictionaries(FIELD_NAMES | ANY_TEXT, ANY_TEXT, max_size=6),
    channel=st.sampled_from([OPS, OPS_B, "unknown", ""]),
    user=st.sampled_from([KIM, LEE, "mallory", ""]),
    text=st.sampled_from(["run echo_args host=web value=hi", "help", "pending", "approve K7P2QX", "", "frobnicate",
                          "run echo_args host=web 'x", "output t1 h1 stderr 2", "history x 5 6"]) | ANY_TEXT,
    as_json=st.booleans(),
    with_token=st.booleans(),
)  # fmt: skip
def test_any_messenger_request_is_sent_once_or_answered_with_a_reason(
    offline_bridge: Bridge,
    extra: dict[str, str],
    channel: str,
    user: str,
    text: str,
    as_json: bool,
    with_token: bool,
) -> None:
    link = FakeLink()
    offline_bridge.link = link  # type: ignore[assignment]
    for box in offline_bridge.outboxes.values():
        box.items.clear()
    fields = {**extra, "channel_id": channel, "user_id": user, "text": text}
    fields["token"] = MM_TOKEN if with_token else extra.get("token", "") + "x"
    body = json.dumps(fields).encode() if as_json else form(fields)
    kind = "application/json" if as_json else "application/x-www-form-urlencoded"
    reply = run(offline_bridge.answer({"content-type": kind}, body))
    if not with_token:
        assert reply.status == 401 and link.packets == []
        return
    assert reply.status == 200
    answer = json.loads(reply.body) if reply.body else {}
    if link.packets:
        [packet] = link.packets
        assert packet["room_id"] == {OPS: "ops", OPS_B: "ops-b"}[channel]
        assert packet["user_id"] == {KIM: "kim", LEE: "lee"}[user] and packet["task_id"].startswith("bridge-")
        assert answer.get("text") is None or "task" in answer["text"] or "작업" in answer["text"]
    elif fields.get("ssl_check") == "1":
        assert reply.body == b""
    elif not fields.get("command") and not fields.get("trigger_word") and not is_command(text):
        assert answer == {}  # conversation in a channel whose every message comes: left alone, never answered
    else:
        assert answer["text"].strip(), answer  # a reason, in words


def test_request_fields_take_form_or_json_and_nothing_else() -> None:
    assert request_fields({}, b"a=1&b=%ED%95%9C&a=2") == {"a": "1", "b": "한"}
    json_body = b'{"a": "x", "n": 5, "d": {}}'
    assert request_fields({"content-type": "application/json"}, json_body) == {"a": "x", "n": "5"}
    assert request_fields({"content-type": "application/json"}, b"[1]") is None
    assert request_fields({}, b"a=%FF") is None and request_fields({}, b"\xff") is None
    body = b"token=x&text=hi"
    headers = {k.lower(): v for k, v in slack_headers(body).items()}
    assert slack_signature_valid(SLACK_SECRET, headers, body, time.time())
    assert not slack_signature_valid(SLACK_SECRET, headers, body + b"!", time.time())
    assert not slack_signature_valid(SLACK_SECRET, headers, body, time.time() + 3600)


# -- the endpoint itself: plain HTTP, and nothing else --------------------------------------------------------


async def raw_http(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    return answer


async def test_the_endpoint_answers_plain_http_and_refuses_everything_else(tmp_path: Path) -> None:
    messenger = Messenger("ops", "ops-b", "slack-ops")
    folder = tmp_path / "bridge-home"
    bridge = Bridge(
        load_bridge_config(write_config(folder, 9), environ_for(messenger, folder))
    )  # no relay there
    port = await bridge.start()
    try:
        status = lambda answer: answer.split(b"\r\n", 1)[0]  # noqa: E731
        assert (
            status(await raw_http(port, b"GET /hooks/guardia HTTP/1.1\r\nHost: x\r\n\r\n"))
            == b"HTTP/1.1 405 Method Not Allowed"
        )
        assert (
            status(await raw_http(port, b"POST /other HTTP/1.1\r\nContent-Length: 0\r\n\r\n"))
            == b"HTTP/1.1 404 Not Found"
        )
        chunked = b"POST /hooks/guardia HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        assert status(await raw_http(port, chunked)) == b"HTTP/1.1 411 Length Required"
        huge = b"POST /hooks/guardia HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"
        assert status(await raw_http(port, huge)) == b"HTTP/1.1 413 Request Entity Too Large"
        assert status(await raw_http(port, b"\x00\xff garbage\r\n\r\n")) == b"HTTP/1.1 400 Bad Request"
        assert status(await raw_http(port, b"POST /hooks/guardia HTTP/1.1\r\n" + b"X: y\r\n" * 5000)) == (
            b"HTTP/1.1 400 Bad Request"
        )  # headers past the limit
        body = form(mattermost_outgoing("help"))
        answer = await raw_http(port, b"POST /hooks/guardia?x=1 HTTP/1.1\r\nContent-Type: application/x-www-form-"
                                b"urlencoded\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
        assert status(answer) == b"HTTP/1.1 200 OK"
        # No relay: the command is not sent, and the channel is told so (in Korean), not left waiting.
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["text"].startswith(
            "지금은 중계 서버에 연결할 수 없어"
        )
        assert bridge.sent == 0
    finally:
        await bridge.stop(grace=0)
        messenger.close()


@pytest.mark.posix_only(reason="stops the process with SIGTERM")
async def test_agent_bridge_runs_as_a_process_and_posts_the_relays_own_answer(tmp_path: Path) -> None:
    """`agent bridge` for real: a relay with no agent refuses at once, in Korean; the channel gets that answer."""
    relay = Relay(
        agent_token=RELAY_TOKEN, operator_token=OPERATOR_TOKEN, settings=RelaySettings(offline_wait=0)
    )
    relay.port = await relay.start("127.0.0.1", 0)  # type: ignore[attr-defined]
    messenger = Messenger("ops", "ops-b", "slack-ops")
    folder = tmp_path / "bridge-home"
    config = write_config(folder, relay.port)  # type: ignore[attr-defined]
    env = {**os.environ, **environ_for(messenger, folder)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "bridge", "--config", str(config), cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        first = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        port = int(first.split("http://127.0.0.1:", 1)[1].split("/", 1)[0])
        await eventually(lambda: relay.operators, 20, what="the bridge connected to the relay")
        reply = await http_post(port, form(mattermost_outgoing("run echo_args host=web value=hi")), FORM)
        assert reply.status_code == 200 and reply.json() == {}
        posted = await eventually(lambda: messenger.posts("ops"), 20, what="the relay's answer posted")
        assert posted == ["❌ 에이전트가 오프라인입니다. 나중에 다시 보내 주세요. (AGENT_OFFLINE)"]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await relay.stop()
        messenger.close()


# -- the command line -----------------------------------------------------------------------------------------


def test_agent_bridge_help_and_check(tmp_path: Path) -> None:
    messenger = Messenger("ops", "ops-b", "slack-ops")
    try:
        config = write_config(tmp_path, 8765)
        env = environ_for(messenger, tmp_path)
        result = CliRunner().invoke(main, ["bridge", "--config", str(config), "--check"], env=env)
        assert result.exit_code == 0, result.output
        assert f"channel {OPS} -> room ops" in result.output
        assert "2 token(s) and Slack signatures" in result.output
        assert MM_TOKEN not in result.output and messenger.url("ops") not in result.output
        helped = CliRunner().invoke(main, ["bridge", "--help"])
        assert helped.exit_code == 0
        assert "incoming webhook" in helped.output and "docs/bridge.md" in helped.output
    finally:
        messenger.close()


def test_a_bad_bridge_config_lists_every_problem_at_once_without_a_secret(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(
        '[listen]\nport = 99999\n\n[relay]\nurl = "ws://relay.example.org/operator"\n\n'
        '[messenger]\ntoken = "s3cret-in-the-file"\nretry_min = 5\nretry_max = 1\n\n'
        '[rooms.C1]\nroom = "ops"\nwebhook_url = "https://hooks.slack.com/services/T/B/s3cret-url"\n\n'
        '[rooms.C2]\nroom = "ops"\nwebhook_env = "UNSET_HOOK"\n\n'
        '[rooms.C3]\nroom = "db"\nwebhook_file = "missing.url"\n\n[users]\nU1 = "kim\\u0007"\n',
        encoding="utf-8", newline="\n",
    )  # fmt: skip
    result = CliRunner().invoke(main, ["bridge", "--config", str(config)], env={"UNSET_HOOK": ""})
    assert result.exit_code == 2 and "Traceback" not in result.output
    for problem in [
        "listen.port", "messenger.token: secrets never go in this file", "(token_env)", "rooms.C1.webhook_url",
        "(webhook_env)", "relay.url: a plain ws:// URL is allowed for a loopback relay only", "relay.token: required",
        "retry_min: must not be larger", "rooms.C2.room: room 'ops' is mapped from channel C1 too",
        "rooms.C2.webhook_env: the environment variable UNSET_HOOK is not set", "rooms.C3.webhook_file: cannot read",
        "users.U1",
    ]:  # fmt: skip
        assert problem in result.output, (problem, result.output)
    assert "s3cret" not in result.output
    missing = CliRunner().invoke(main, ["bridge", "--config", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 2 and "cannot read it" in missing.output and "Traceback" not in missing.output
