"""The webhook bridge (``agent bridge``): a messenger's channels drive the relay as rooms, over plain webhooks.

The style Mattermost, Slack, Rocket.Chat and the Korean work messengers with webhook bots share:

* **Commands in.** The messenger POSTs what a person typed (an *outgoing webhook* or a *slash command*, form-encoded
  or JSON) to the bridge's HTTP endpoint, with its token, the channel and the user. The bridge checks the token
  (constant-time; or Slack's request signature), maps the channel to a relay room and the messenger user to the
  relay's ``user_id`` (both by config; anything unknown is refused with a clear answer), parses the line with the
  chat grammar (:func:`agent.reference.chat.parse_chat`) and sends the command to the relay. Whatever it has to say
  about the request itself (a bad line, an unknown user, the relay unreachable) is the webhook's immediate answer.
* **Room messages out.** The bridge is an operator client of the relay (``/operator``, ``Authorization: Bearer``).
  Every frame of a mapped room that ``agent chat`` would print (approval prompts, progress lines, the relay's
  notices, final answers, unprompted reports) is posted to that room's *incoming webhook* as ``{"text": …}``: the
  agent's ``payload.text`` as it is, in the agent's language, code blocks included. Frames of other rooms are
  ignored (a relay that gives an operator credential only its own rooms sends none).
* **A messenger that is down loses nothing.** Each room has its own bounded queue and its own sender, retried with
  backoff; a webhook that hangs or fails delays only its own room. At the bound the oldest progress lines go first
  (then reports and notices), never a final answer or an approval prompt, and the room is told how many were left
  out.

docs/bridge.md is the operator's guide; :func:`load_bridge_config` the config; :class:`Bridge` the running bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import http.client
import io
import json
import logging
import random
import secrets
import ssl
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, urlsplit

import requests
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from agent.chat.i18n import Chat, message_of
from agent.chat.markup import neutralize
from agent.config.schema import is_loopback_url, ws_url_problems
from agent.reference.chat import GRAMMAR, parse_chat, text_of
from agent.session.protocol import ROOM_ID, USER_ID, encodable, valid_identifier

logger = logging.getLogger(__name__)

#: Frames the bridge takes from the relay (an agent's answer to a 100-host run can be several MiB).
MAX_FRAME = 16 * 1024 * 1024
#: The request line and headers of a webhook request, and its body (the messengers send well under 4 KiB).
MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
#: Seconds a client has to send its whole request; connections served at once.
REQUEST_TIMEOUT = 10.0
MAX_CONNECTIONS = 64
#: Seconds a command may take to go out to the relay before the answer says it is not sure it went (Slack wants
#: its answer within 3 s).
SEND_TIMEOUT = 2.0
#: How far Slack's request timestamp may be from this clock (Slack's own advice: five minutes).
SIGNATURE_MAX_AGE = 300
#: Messages posted once each (by msg_id), and commands whose room the bridge remembers.
SEEN_MSG_IDS = 10_000
KNOWN_TASKS = 10_000
#: Reconnecting to the relay: first wait, longest wait (seconds).
RELAY_RETRY_MIN, RELAY_RETRY_MAX = 0.5, 30.0
#: A queue holding only final answers and approval prompts may grow to this many times ``queue_limit``; beyond
#: it (reachable only through commands other clients sent into the room) the oldest is dropped and logged.
HARD_LIMIT_FACTOR = 4
#: Keys that would hold a secret, refused in the file with the key that names where the secret is instead.
SECRET_KEYS = {"token": "token", "tokens": "token", "secret": "signing_secret", "signing_secret": "signing_secret",
               "password": "token", "webhook": "webhook", "webhook_url": "webhook", "url": "webhook"}  # fmt: skip
JSON_TYPE = "application/json; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"

# What a room's post is: the kinds in DROP_ORDER may be left out when the queue is full (first kind first).
FINAL, PROMPT, PROGRESS, NOTICE, ECHO, REFUSED = "final", "prompt", "progress", "notice", "echo", "refused"
DROP_ORDER = (PROGRESS, NOTICE)
#: The relay events a room sees, as ``agent chat`` prints them (agent/reference/chat.py), and their kind.
_EVENT_KINDS = {"TASK_FINISHED": FINAL, "TASK_PENDING_APPROVAL": PROMPT, "TASK_PROGRESS": PROGRESS,
                "RELAY_NOTICE": NOTICE, "REPORT": NOTICE}  # fmt: skip
#: The grammar's command words: in a channel whose every message reaches the bridge (an outgoing webhook without
#: trigger words) a message starting with anything else is conversation, and is left alone.
COMMAND_WORDS = frozenset(part.split()[0] for part in GRAMMAR.split(" | "))
#: Typographic quotes a phone keyboard puts in, read as the plain ones the grammar knows.
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})


class BridgeConfigError(ValueError):
    """The bridge's config cannot be used; ``problems`` lists every reason (never a secret's value)."""

    def __init__(self, source: Path, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


# -- the config -----------------------------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListenSection(_Section):
    #: Where the messenger's outgoing webhook / slash command reaches the bridge (behind a TLS reverse proxy).
    host: str = "127.0.0.1"
    port: int = Field(default=8790, ge=0, le=65535)
    #: The request URL's path: the messenger POSTs here; anything else is 404.
    path: str = Field(default="/guardia", pattern=r"^/[A-Za-z0-9._~/-]*$", max_length=200)


class RelaySection(_Section):
    #: The relay's operator side: ws://HOST:PORT/operator (loopback only) or wss://…
    url: str
    #: The operator token (sent as ``Authorization: Bearer``): an environment variable's name, or a file.
    token_env: str | None = None
    token_file: Path | None = None
    #: A private CA for a wss:// relay.
    ca_file: Path | None = None


class FieldNames(_Section):
    """Which request fields carry what (the defaults: the names Mattermost and Slack use)."""

    token: str = "token"  # noqa: S105 - the name of a field, not a secret
    channel: str = "channel_id"
    user: str = "user_id"
    text: str = "text"
    #: An outgoing webhook's trigger word, cut from the front of the text.
    trigger: str = "trigger_word"


class MessengerSection(_Section):
    #: The messenger's tokens (one per outgoing webhook or slash command): environment variables' names, or files.
    token_env: list[str] = Field(default_factory=list)
    token_file: list[Path] = Field(default_factory=list)
    #: Slack's signing secret: requests signed with it (X-Slack-Signature) are accepted too.
    signing_secret_env: str | None = None
    signing_secret_file: Path | None = None
    fields: FieldNames = Field(default_factory=FieldNames)
    #: The JSON key of a post and of an answer ("text" for Mattermost, Slack, Rocket.Chat).
    post_field: str = "text"
    #: A slash command is not seen by the room: post "👤 user> line" before its answers, as `agent chat` shows it.
    echo_commands: bool = True
    #: HTTP(S) proxy for posting to the incoming webhooks (none: direct; the environment's proxy is not used).
    proxy: str | None = None
    #: A private CA for https:// incoming webhooks.
    ca_file: Path | None = None
    #: Allow http:// incoming webhooks on another host (the URL is a credential and would travel in clear text).
    allow_http: bool = False
    #: Seconds one post may take.
    timeout: float = Field(default=10.0, gt=0, le=300)
    #: Longest post, in characters (Mattermost's default limit is 16383); longer texts are cut and say so.
    max_text: int = Field(default=12000, ge=200, le=1_000_000)
    #: Posts waiting per room while the messenger is away; beyond it progress lines (then reports) are left out.
    queue_limit: int = Field(default=200, ge=1, le=100_000)
    #: Retrying a post that failed: first wait, longest wait, in seconds.
    retry_min: float = Field(default=1.0, gt=0, le=3600)
    retry_max: float = Field(default=60.0, gt=0, le=3600)

    @field_validator("token_env", "token_file", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class RoomSection(_Section):
    #: The relay room this channel is.
    room: str
    #: The channel's incoming webhook URL (a credential): an environment variable's name, or a file.
    webhook_env: str | None = None
    webhook_file: Path | None = None


class BridgeSettings(_Section):
    """``bridge.toml``: see docs/bridge.md."""

    #: The language of the bridge's own answers (the agent's and the relay's texts come rendered already).
    language: Literal["ko", "en"] = "ko"
    listen: ListenSection = Field(default_factory=ListenSection)
    relay: RelaySection
    messenger: MessengerSection = Field(default_factory=MessengerSection)
    #: Channel id → its room and incoming webhook.
    rooms: dict[str, RoomSection] = Field(min_length=1)
    #: Messenger user (the ``fields.user`` value) → the relay's user_id. Anyone else is refused.
    users: dict[str, str] = Field(min_length=1)


@dataclass(frozen=True)
class RoomRoute:
    channel: str
    room: str
    webhook_url: str = field(repr=False)


@dataclass(frozen=True)
class BridgeConfig:
    """The settings with their secrets read (from the environment or files)."""

    settings: BridgeSettings
    source: Path
    relay_token: str = field(repr=False)
    messenger_tokens: tuple[str, ...] = field(repr=False)
    signing_secret: str | None = field(repr=False)
    #: channel id → route
    routes: dict[str, RoomRoute]
    relay_ca: Path | None = None
    messenger_ca: Path | None = None

    def summary(self) -> str:
        """What ``agent bridge --check`` prints: where it listens, what it maps (no secrets)."""
        s = self.settings
        relay = urlsplit(s.relay.url)
        accepts = [f"{len(self.messenger_tokens)} token(s)"] + (
            ["Slack signatures"] if self.signing_secret else []
        )
        lines = [
            f"config {self.source}: OK",
            f"listens on http://{s.listen.host}:{s.listen.port}{s.listen.path} (accepts {' and '.join(accepts)})",
            f"relay {relay.scheme}://{relay.hostname}{f':{relay.port}' if relay.port else ''}{relay.path}",
        ]
        lines += [f"channel {r.channel} -> room {r.room}" for r in self.routes.values()]
        lines.append(f"{len(s.users)} user(s) mapped")
        return "\n".join(lines)


Model = TypeVar("Model", bound=BaseModel)


def _validated(model: type[Model], raw: Any) -> Model | None:
    """The section, its unknown keys left aside (the schema problems name them), or None when it is not valid."""
    if isinstance(raw, dict):
        raw = {key: value for key, value in raw.items() if key in model.model_fields}
    try:
        return model.model_validate(raw)
    except ValidationError:
        return None


def _schema_problems(exc: ValidationError) -> list[str]:
    """One line per schema error, never echoing a value; a secret written into the file gets its own hint."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = [str(part) for part in error["loc"]]
        where = ".".join(loc) or "(top level)"
        if error["type"] == "extra_forbidden" and loc and loc[-1] in SECRET_KEYS:
            key = SECRET_KEYS[loc[-1]]
            problems.append(f"{where}: secrets never go in this file: name an environment variable "
                            f"({key}_env) or a file ({key}_file) that holds it")  # fmt: skip
        else:
            problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return problems


class _Secrets:
    """Reads secrets from the environment or files, noting every problem."""

    def __init__(self, base: Path, environ: Mapping[str, str], problems: list[str]) -> None:
        self.base, self.environ, self.problems = base, environ, problems

    def path(self, path: Path) -> Path:
        return path if path.is_absolute() else self.base / path

    def env(self, where: str, name: str) -> str | None:
        value = self.environ.get(name, "").strip()
        if not value:
            self.problems.append(f"{where}: the environment variable {name} is not set (or empty)")
            return None
        return value

    def file(self, where: str, path: Path) -> str | None:
        try:
            value = self.path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            self.problems.append(f"{where}: cannot read {path}: {reason}")
            return None
        if not value:
            self.problems.append(f"{where}: {path} is empty")
        return value or None

    def one(self, where: str, env: str | None, file: Path | None, required: bool = True) -> str | None:
        """The secret named by ``…_env`` or ``…_file`` (exactly one of them when ``required``)."""
        if env is not None and file is not None:
            self.problems.append(f"{where}: give {where}_env or {where}_file, not both")
            return None
        if env is not None:
            return self.env(f"{where}_env", env)
        if file is not None:
            return self.file(f"{where}_file", file)
        if required:
            self.problems.append(f"{where}: required: {where}_env (an environment variable) or {where}_file")
        return None

    def ca(self, where: str, path: Path | None) -> Path | None:
        if path is None:
            return None
        if not self.path(path).is_file():
            self.problems.append(f"{where}: {path} is not a file")
        return self.path(path)


def _webhook_problems(url: str, allow_http: bool) -> list[str]:
    """What is wrong with an incoming webhook URL, without showing it (it is a credential)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        return ["the incoming webhook URL is not a usable URL"]
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        return ["the incoming webhook URL must be http(s)://HOST/… with no spaces"]
    if parts.scheme == "http" and not allow_http and not is_loopback_url(url):
        return ["the incoming webhook URL is http:// to another host: its secret and every answer would travel "
                "in clear text (use https://, or set messenger.allow_http = true)"]  # fmt: skip
    return []


def _relay_problems(relay: RelaySection) -> list[str]:
    problems = [f"relay.url: {p}" for p in ws_url_problems(relay.url)]
    if not problems and relay.url.startswith("ws://") and not is_loopback_url(relay.url):
        problems.append("relay.url: a plain ws:// URL is allowed for a loopback relay only (the operator token "
                        "would travel in clear text): use wss://")  # fmt: skip
    return problems


def _messenger_problems(messenger: MessengerSection) -> list[str]:
    problems = []
    if messenger.retry_min > messenger.retry_max:
        problems.append("messenger.retry_min: must not be larger than retry_max")
    if messenger.proxy is not None and urlsplit(messenger.proxy).scheme not in ("http", "https"):
        problems.append("messenger.proxy: must be an http:// or https:// URL")
    names = messenger.fields.model_dump()
    if any(not isinstance(name, str) or not name for name in names.values()):
        problems.append("messenger.fields: every field name must be a non-empty string")
    return problems


def _messenger_secrets(messenger: MessengerSection, secrets_: _Secrets) -> tuple[list[str], str | None]:
    tokens = [secrets_.env("messenger.token_env", name) for name in messenger.token_env]
    tokens += [secrets_.file("messenger.token_file", path) for path in messenger.token_file]
    signing = secrets_.one("messenger.signing_secret", messenger.signing_secret_env,
                           messenger.signing_secret_file, required=False)  # fmt: skip
    named = messenger.token_env or messenger.token_file
    if not named and messenger.signing_secret_env is None and messenger.signing_secret_file is None:
        secrets_.problems.append("messenger: name at least one token (token_env or token_file) or a Slack "
                                 "signing secret (signing_secret_env or signing_secret_file)")  # fmt: skip
    return [t for t in tokens if t], signing


def _room_routes(raw: Any, allow_http: bool, secrets_: _Secrets) -> dict[str, RoomRoute]:
    routes: dict[str, RoomRoute] = {}
    if not isinstance(raw, dict):
        return routes
    owners: dict[str, str] = {}
    for channel, section in raw.items():
        room = _validated(RoomSection, section)
        if room is None:
            continue  # the schema problems name it
        where = f"rooms.{channel}"
        if not valid_identifier(room.room, ROOM_ID):
            secrets_.problems.append(f"{where}.room: 1-128 characters, no control characters")
        elif room.room in owners:
            secrets_.problems.append(
                f"{where}.room: room {room.room!r} is mapped from channel {owners[room.room]} too"
            )
        owners.setdefault(room.room, channel)
        url = secrets_.one(f"{where}.webhook", room.webhook_env, room.webhook_file)
        if url is not None:
            secrets_.problems += [f"{where}.webhook: {p}" for p in _webhook_problems(url, allow_http)]
            routes[channel] = RoomRoute(channel, room.room, url)
    return routes


def _user_problems(raw: Any) -> list[str]:
    if not isinstance(raw, dict):
        return []
    return [f"users.{key}: the relay user_id must be 1-128 characters, no control characters"
            for key, value in raw.items() if isinstance(value, str) and not valid_identifier(value, USER_ID)]  # fmt: skip


def _read_toml(path: Path) -> dict[str, Any]:
    import tomli

    try:
        raw = tomli.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BridgeConfigError(path, [f"cannot read it: {exc.strerror or exc}"]) from None
    except (UnicodeDecodeError, tomli.TOMLDecodeError) as exc:
        raise BridgeConfigError(path, [f"not valid TOML: {exc}"]) from None
    return raw


def load_bridge_config(path: Path, environ: Mapping[str, str]) -> BridgeConfig:
    """Read ``bridge.toml`` and the secrets it names (from ``environ`` or files next to it).

    Raises:
        BridgeConfigError: naming every problem found (schema, URLs, secrets not set, unreadable files).
    """
    raw = _read_toml(path)
    problems: list[str] = []
    settings: BridgeSettings | None = None
    try:
        settings = BridgeSettings.model_validate(raw)
    except ValidationError as exc:
        problems += _schema_problems(exc)
    read = _Secrets(path.parent, environ, problems)
    # The sections that validate on their own are checked further even when another one does not.
    relay = _validated(RelaySection, raw.get("relay"))
    messenger = _validated(MessengerSection, raw.get("messenger", {}))
    relay_token, relay_ca = None, None
    if relay is not None:
        problems += _relay_problems(relay)
        relay_token = read.one("relay.token", relay.token_env, relay.token_file)
        relay_ca = read.ca("relay.ca_file", relay.ca_file)
    tokens: list[str] = []
    signing, messenger_ca = None, None
    if messenger is not None:
        problems += _messenger_problems(messenger)
        tokens, signing = _messenger_secrets(messenger, read)
        messenger_ca = read.ca("messenger.ca_file", messenger.ca_file)
    routes = _room_routes(raw.get("rooms"), messenger.allow_http if messenger else False, read)
    problems += _user_problems(raw.get("users"))
    if problems or settings is None or relay_token is None:
        raise BridgeConfigError(path, problems or ["not usable"])
    return BridgeConfig(settings, path, relay_token, tuple(tokens), signing, routes, relay_ca, messenger_ca)


# -- one webhook request --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """The HTTP answer to one webhook request."""

    status: int
    body: bytes = b""
    content_type: str = TEXT_TYPE

    @classmethod
    def plain(cls, status: int, text: str) -> Reply:
        return cls(status, text.encode("utf-8"))


def _json_fields(text: str) -> dict[str, str] | None:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    fields: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # some messengers send numeric ids
        if isinstance(value, str) and encodable(key) and encodable(value):
            fields[key] = value
    return fields


def request_fields(headers: Mapping[str, str], body: bytes) -> dict[str, str] | None:
    """The request's fields (first value of each, strings only): JSON when it says so, else form-encoded.

    None when the body is neither (not UTF-8, not a JSON object, a broken form).
    """
    kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if kind == "application/json" or kind.endswith("+json"):
        return _json_fields(text)
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=200, errors="strict")
    except ValueError:  # too many fields, or percent-escapes that are not UTF-8
        return None
    fields: dict[str, str] = {}
    for key, value in pairs:
        fields.setdefault(key, value)
    return fields


def slack_signature_valid(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> bool:
    """Slack's request signing: ``v0=`` + HMAC-SHA256(secret, ``v0:{timestamp}:{body}``), timestamp within 5 min."""
    stamp = headers.get("x-slack-request-timestamp", "")
    given = headers.get("x-slack-signature", "")
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12 or not given.isascii():
        return False
    if abs(now - int(stamp)) > SIGNATURE_MAX_AGE:
        return False
    digest = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(("v0=" + digest).encode(), given.encode())


def typed_line(fields: Mapping[str, str], names: FieldNames, slack: bool) -> str:
    """The command line a person typed: the trigger word cut off, Slack's escapes undone, phone quotes plain."""
    text = fields.get(names.text, "")
    trigger = fields.get(names.trigger, "")
    if trigger and text.startswith(trigger):
        text = text[len(trigger) :]
    if slack:  # Slack escapes &, < and > in what the user typed
        text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return text.translate(_QUOTES).strip()


def fit(text: str, limit: int, chat: Chat) -> str:
    """``text`` within ``limit`` characters: cut at a line, an open code block closed, and a line saying so."""
    if len(text) <= limit:
        return text
    note = chat._("✂️ {n} more characters not shown (the messenger's limit); 'output' pages through the rest.")
    budget = max(0, limit - len(note) - 16)
    cut = text[:budget]
    newline = cut.rfind("\n")
    if newline > budget // 2:
        cut = cut[:newline]
    if cut.count("```") % 2:
        cut += "\n```"
    return cut + "\n" + note.format(n=len(text) - len(cut))


# -- posting to one room's incoming webhook -------------------------------------------------------------------


@dataclass(frozen=True)
class PostOutcome:
    delivered: bool
    #: Worth trying again later (the messenger is down, busy or refusing the URL); else the post itself is refused.
    retry: bool
    reason: str
    status: int | None = None
    retry_after: float | None = None


def classify(status: int, retry_after: str | None = None) -> PostOutcome:
    """What an incoming webhook's HTTP status means for the post."""
    if 200 <= status < 300:
        return PostOutcome(True, False, "delivered", status)
    wait = float(retry_after) if retry_after and retry_after.isascii() and retry_after.isdigit() else None
    if status in (400, 413, 422):
        # This post is refused (a bad payload, too large): trying it again changes nothing.
        return PostOutcome(False, False, f"HTTP {status}: the messenger refused this post", status)
    if status in (408, 429) or status >= 500:
        return PostOutcome(False, True, f"HTTP {status}: the messenger is busy or down", status, wait)
    # 3xx, 401, 403, 404, 410…: the URL is refused (a deleted webhook, an archived channel): it may be fixed
    # on the messenger's side, so the posts wait, and the log says so at ERROR.
    return PostOutcome(False, True, f"HTTP {status}: the messenger refuses this webhook URL", status, wait)


class WebhookPoster:
    """POSTs ``{post_field: text}`` to one incoming webhook (blocking: run it in a worker thread)."""

    def __init__(
        self, url: str, post_field: str, timeout: float, proxy: str | None, ca_file: Path | None
    ) -> None:
        self.url, self.post_field, self.timeout = url, post_field, timeout
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy or CA from the environment unless the config names one
        if proxy:
            self.session.proxies = {"http": proxy, "https": proxy}
        self.session.verify = str(ca_file) if ca_file else True

    def post(self, text: str) -> PostOutcome:
        body = json.dumps({self.post_field: text}, ensure_ascii=False).encode("utf-8")
        try:
            response = self.session.post(
                self.url, data=body, headers={"Content-Type": JSON_TYPE}, timeout=self.timeout,
                allow_redirects=False,
            )  # fmt: skip
        except Exception as exc:
            # requests' errors, and any other: the post waits, and the room's sender lives on.
            return PostOutcome(False, True, f"no answer ({type(exc).__name__})")
        with contextlib.closing(response):
            return classify(response.status_code, response.headers.get("Retry-After"))

    def close(self) -> None:
        self.session.close()


@dataclass
class _Post:
    text: str
    kind: str


class RoomOutbox:
    """One room's posts, in order, delivered by their own sender: a slow or dead webhook holds up only this room.

    ``put`` never blocks. Beyond ``limit`` posts, the oldest progress line is left out (then the oldest report
    or notice); final answers and approval prompts are kept (up to :data:`HARD_LIMIT_FACTOR` × ``limit``), and
    the next post says how many were left out.
    """

    def __init__(
        self,
        route: RoomRoute,
        post: Callable[[str], PostOutcome],
        chat: Chat,
        executor: ThreadPoolExecutor,
        limit: int = 200,
        retry: tuple[float, float] = (1.0, 60.0),
    ) -> None:
        self.route, self._post, self.chat, self._executor = route, post, chat, executor
        self.limit = limit
        self.retry_min, self.retry_max = retry
        self.items: deque[_Post] = deque()
        #: Posts left out and not yet announced.
        self.dropped = 0
        self.delivered = 0
        self._announcing = 0
        self._inflight = False
        self._wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()

    def put(self, text: str, kind: str) -> _Post:
        post = _Post(text, kind)
        self.items.append(post)
        while len(self.items) > self.limit and self._drop_one():
            pass
        self.idle.clear()
        self._wake.set()
        return post

    def discard(self, post: _Post) -> None:
        """Take back a post not yet being delivered (an echo of a command that could not be sent)."""
        if post in self.items and not (self._inflight and self.items[0] is post):
            self.items.remove(post)

    def backlog(self) -> int:
        """Posts waiting that are never left out (final answers, approval prompts, echoes)."""
        return sum(1 for post in self.items if post.kind not in DROP_ORDER)

    def _drop_one(self) -> bool:
        start = 1 if self._inflight else 0
        for kind in DROP_ORDER:
            for index in range(start, len(self.items)):
                if self.items[index].kind == kind:
                    del self.items[index]
                    self.dropped += 1
                    return True
        if len(self.items) > self.limit * HARD_LIMIT_FACTOR and len(self.items) > start:
            victim = self.items[start]
            del self.items[start]
            self.dropped += 1
            logger.error("room %s: %d posts wait for a messenger that does not take them; a %s post was left out",
                         self.route.room, len(self.items), victim.kind)  # fmt: skip
            return True
        return False

    def _next(self) -> str | None:
        """The text to deliver now (the left-out notice first), or None when there is nothing."""
        if self.dropped:
            self._announcing = self.dropped
            text = self.chat.ngettext(
                "⚠️ While the messenger did not take posts, {n} post was left out here (progress lines and "
                "notices first); 'history' lists every run.",
                "⚠️ While the messenger did not take posts, {n} posts were left out here (progress lines and "
                "notices first); 'history' lists every run.", self.dropped,
            )  # fmt: skip
            return text.format(n=self.dropped)
        self._announcing = 0
        return self.items[0].text if self.items else None

    def _done(self) -> None:
        if self._announcing:
            self.dropped -= self._announcing
        elif self.items:
            self.items.popleft()
            self.delivered += 1

    def _refused(self, outcome: PostOutcome) -> None:
        """The messenger refuses this post (not the URL): say so in its place once, then give it up."""
        logger.error("room %s: %s; it is replaced by a short notice", self.route.room, outcome.reason)
        if self._announcing:
            self.dropped -= self._announcing
        elif self.items and self.items[0].kind == REFUSED:
            self.items.popleft()
        elif self.items:
            text = self.chat._(
                "⚠️ The messenger refused a post for this room (HTTP {status}); it is not shown."
            )
            self.items[0] = _Post(text.format(status=outcome.status), REFUSED)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        delay, failures = self.retry_min, 0
        while True:
            text = self._next()
            if text is None:
                self.idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            self._inflight = not self._announcing
            try:
                outcome = await loop.run_in_executor(self._executor, self._post, text)
            finally:
                self._inflight = False
            if outcome.delivered or not outcome.retry:
                if failures:
                    logger.info("room %s: the messenger takes posts again (after %d failed tries)",
                                self.route.room, failures)  # fmt: skip
                self._done() if outcome.delivered else self._refused(outcome)
                delay, failures = self.retry_min, 0
                continue
            failures += 1
            log = logger.error if "refuses this webhook URL" in outcome.reason else logger.warning
            log("room %s: post not delivered (%s); %d waiting, trying again in %.1f s",
                self.route.room, outcome.reason, len(self.items), delay)  # fmt: skip
            wait = min(outcome.retry_after, 300.0) if outcome.retry_after is not None else delay
            await asyncio.sleep(wait * random.uniform(0.8, 1.0))  # noqa: S311 - jitter, not a secret
            delay = min(delay * 2, self.retry_max)


# -- the relay side -------------------------------------------------------------------------------------------


class RelayLink:
    """The bridge's operator connection to the relay: dialled again, with backoff, whenever it drops."""

    def __init__(
        self, url: str, token: str, ca_file: Path | None, on_frame: Callable[[str | bytes], None]
    ) -> None:
        self.url, self._token, self._on_frame = url, token, on_frame
        self._ssl = ssl.create_default_context(cafile=str(ca_file) if ca_file else None) if url.startswith(
            "wss://") else None  # fmt: skip
        self._ws: ClientConnection | None = None
        self.connects = 0

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def send(self, packet: dict[str, Any]) -> bool | None:
        """Send one command: True sent, False not sent (no connection), None not sure (the relay is slow)."""
        ws = self._ws
        if ws is None:
            return False
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await ws.send(json.dumps(packet, ensure_ascii=False))
        except ConnectionClosed:
            return False
        except TimeoutError:
            return None
        return True

    async def run(self) -> None:
        delay = RELAY_RETRY_MIN
        while True:
            try:
                async with connect(
                    self.url, additional_headers={"Authorization": f"Bearer {self._token}"}, ssl=self._ssl,
                    proxy=None, open_timeout=10, max_size=MAX_FRAME, close_timeout=2,
                ) as ws:  # fmt: skip
                    self._ws, delay = ws, RELAY_RETRY_MIN
                    self.connects += 1
                    logger.info("connected to the relay")
                    async for frame in ws:
                        try:
                            self._on_frame(frame)
                        except Exception:  # a bug with one frame must not cut every room off the relay
                            logger.exception("a frame from the relay could not be handled; it is skipped")
                logger.warning("the relay closed the connection")
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    logger.error("the relay refused the bridge's operator token (HTTP %d): check [relay] "
                                 "token_env / token_file", status)  # fmt: skip
                    delay = RELAY_RETRY_MAX
                else:
                    logger.error("the relay answered HTTP %d", status)
            except (OSError, TimeoutError, WebSocketException) as exc:
                logger.warning("relay connection lost or refused: %s", exc or type(exc).__name__)
            finally:
                self._ws = None
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not a secret
            delay = min(delay * 2, RELAY_RETRY_MAX)


# -- the bridge -----------------------------------------------------------------------------------------------


def _frame_kind(event: dict[str, Any]) -> str | None:
    """The kind of post a relay event makes, or None for what `agent chat` does not print (TASK_ACCEPTED…)."""
    name = event.get("event")
    kind = _EVENT_KINDS.get(name) if isinstance(name, str) else None
    if name == "REPORT" and event.get("task_id"):
        return None
    return kind


def _response_bytes(reply: Reply) -> bytes:
    try:
        phrase = HTTPStatus(reply.status).phrase
    except ValueError:
        phrase = "Status"
    head = [f"HTTP/1.1 {reply.status} {phrase}", f"Content-Type: {reply.content_type}",
            f"Content-Length: {len(reply.body)}", "Connection: close"]  # fmt: skip
    if reply.status == 405:
        head.append("Allow: POST")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body


class Bridge:
    """The running bridge: the webhook endpoint, the relay connection and one outbox per room."""

    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.settings = s = config.settings
        self.chat = Chat(s.language)
        m = s.messenger
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, len(config.routes)), thread_name_prefix="bridge-post"
        )
        self._posters = [WebhookPoster(r.webhook_url, m.post_field, m.timeout, m.proxy, config.messenger_ca)
                         for r in config.routes.values()]  # fmt: skip
        self.outboxes = {
            route.room: RoomOutbox(route, poster.post, self.chat, self._executor, m.queue_limit,
                                   (m.retry_min, m.retry_max))
            for route, poster in zip(config.routes.values(), self._posters, strict=True)
        }  # fmt: skip
        self.link = RelayLink(s.relay.url, config.relay_token, config.relay_ca, self.from_relay)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._tasks: OrderedDict[str, str] = OrderedDict()  # task_id -> room, for commands this bridge sent
        #: Commands sent to the relay (for the operator's log and the tests).
        self.sent = 0
        self._server: asyncio.Server | None = None
        self._background: list[asyncio.Task[None]] = []
        self._connections = 0

    # -- lifecycle

    async def start(self) -> int:
        """Listen for the messenger, dial the relay, start each room's sender; return the port."""
        listen = self.settings.listen
        self._background = [asyncio.create_task(box.run()) for box in self.outboxes.values()]
        self._background.append(asyncio.create_task(self.link.run()))
        self._server = await asyncio.start_server(self._serve_http, listen.host, listen.port, limit=MAX_HEAD)
        port = int(next(iter(self._server.sockets)).getsockname()[1])
        logger.info("bridge listening on %s:%d%s for %d channel(s)", listen.host, port, listen.path,
                    len(self.outboxes))  # fmt: skip
        return port

    async def stop(self, grace: float = 2.0) -> None:
        """Stop taking requests; give the rooms ``grace`` seconds to deliver what waits; stop."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._server.wait_closed()
                    await asyncio.gather(*(box.idle.wait() for box in self.outboxes.values()))
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for box in self.outboxes.values():
            if box.items or box.dropped:
                logger.error("room %s: %d post(s) not delivered when the bridge stopped", box.route.room,
                             len(box.items))  # fmt: skip
        self._executor.shutdown(wait=False, cancel_futures=True)
        for poster in self._posters:
            poster.close()

    # -- relay → rooms

    def from_relay(self, frame: str | bytes) -> None:
        """One frame from the relay: posted to its room's webhook when it is a mapped room's, else ignored."""
        try:
            event = json.loads(frame)
        except (ValueError, RecursionError):
            return
        if not isinstance(event, dict):
            return
        kind = _frame_kind(event)
        boxes = self._boxes_for(event) if kind is not None else []
        if not boxes:
            return
        msg_id = event.get("msg_id")
        if isinstance(msg_id, str):
            if msg_id in self._seen:
                return
            self._seen[msg_id] = None
            if len(self._seen) > SEEN_MSG_IDS:
                self._seen.popitem(last=False)
        text = text_of(event)
        if text.strip() and kind is not None:
            for box in boxes:
                box.put(fit(text, self.settings.messenger.max_text, self.chat), kind)

    def _boxes_for(self, event: dict[str, Any]) -> list[RoomOutbox]:
        """The rooms an event goes to: its room when this bridge maps it; for an answer whose room_id the agent
        could not read, the room this bridge sent that task to; for the relay's notice to this client itself (no
        room, no task: "your previous connection was dropped"), every room, since any of them may have lost posts.
        """
        room, task = event.get("room_id"), event.get("task_id")
        if isinstance(room, str):
            return [self.outboxes[room]] if room in self.outboxes else []
        if isinstance(task, str):
            known = self._tasks.get(task)
            return [self.outboxes[known]] if known in self.outboxes else []
        if room is None and task is None and event.get("event") == "RELAY_NOTICE":
            return list(self.outboxes.values())
        return []

    # -- messenger → relay

    def authentic(self, headers: Mapping[str, str], body: bytes, fields: Mapping[str, str]) -> bool:
        """The request carries one of the messenger's tokens (a field, or ``Authorization: Token …``), or a valid
        Slack signature. Every token is compared, in constant time."""
        given = [fields.get(self.settings.messenger.fields.token, "")]
        authorization = headers.get("authorization", "")
        if authorization[:6].lower() == "token ":
            given.append(authorization[6:].strip())
        ok = False
        for candidate in given:
            for token in self.config.messenger_tokens:
                ok |= hmac.compare_digest(candidate.encode("utf-8"), token.encode("utf-8"))
        if self.config.signing_secret is not None and "x-slack-signature" in headers:
            ok |= slack_signature_valid(self.config.signing_secret, headers, body, time.time())
        return ok

    async def answer(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """Answer one webhook request (``headers`` with lower-case names). Never raises."""
        fields = request_fields(headers, body)
        if fields is None:
            return Reply.plain(400, "expected a form-encoded or JSON object body\n")
        if not self.authentic(headers, body, fields):
            logger.warning("refused a webhook request: bad or missing token")
            return Reply.plain(401, "bad or missing token\n")
        if fields.get("ssl_check") == "1":  # Slack checking the certificate: nothing to do
            return Reply(200)
        slash = bool(fields.get("command"))
        slack = "x-slack-signature" in headers or "api_app_id" in fields
        text = await self._take(fields, slash, slack)
        if not text:
            return Reply(200, b"{}", JSON_TYPE)
        answer = {self.settings.messenger.post_field: text}
        if slash:
            answer["response_type"] = "ephemeral"  # only the person who typed it sees it
        return Reply(200, json.dumps(answer, ensure_ascii=False).encode("utf-8"), JSON_TYPE)

    async def _take(self, fields: Mapping[str, str], slash: bool, slack: bool) -> str:
        """Send the typed command; the text to answer with ("" for an outgoing webhook's success)."""
        names = self.settings.messenger.fields
        line = typed_line(fields, names, slack)
        first = (line.split() or [""])[0].lower()
        if not slash and not fields.get(names.trigger) and first not in COMMAND_WORDS:
            # An outgoing webhook with no trigger word sees every message of its channel, this bridge's own
            # answers included (Mattermost sends a webhook's answer to the outgoing webhooks too): answering
            # conversation would talk to itself for ever. Only lines in the grammar are taken.
            return ""
        channel = fields.get(names.channel, "")
        route = self.config.routes.get(channel)
        if route is None:
            return self.chat._("This channel is not connected to a GUARDiA room (channel {channel}); ask the "
                               "bridge's administrator to add it to [rooms].").format(channel=neutralize(channel[:64]) or "-")  # fmt: skip
        person = fields.get(names.user, "")
        user = self.settings.users.get(person)
        if user is None:
            logger.warning(
                "refused a command from unknown messenger user %r in room %s", person[:64], route.room
            )
            return self.chat._("You are not registered with the GUARDiA bridge (user {user}); ask its "
                               "administrator to add you to [users].").format(user=neutralize(person[:64]) or "-")  # fmt: skip
        task_id = "bridge-" + secrets.token_hex(8)
        try:
            packet = parse_chat(line, task_id, route.room, user)
        except ValueError as exc:
            return "❌ " + self.chat.text(message_of(exc))
        return await self._send(packet, route, line, slash)

    async def _send(self, packet: dict[str, Any], route: RoomRoute, line: str, slash: bool) -> str:
        box = self.outboxes[route.room]
        if box.backlog() >= box.limit:
            return self.chat._("⏸ This room has {n} answers the messenger has not taken yet; new commands wait "
                               "until they are posted. Try again shortly.").format(n=box.backlog())  # fmt: skip
        unreachable = self.chat._("The relay cannot be reached right now; the command was not sent. Try again "
                                  "in a minute.")  # fmt: skip
        if not self.link.connected:
            return unreachable
        task_id, user = packet["task_id"], packet["user_id"]
        self._tasks[task_id] = route.room
        if len(self._tasks) > KNOWN_TASKS:
            self._tasks.popitem(last=False)
        # A slash command is not seen by the room: its line goes first, as `agent chat` shows it.
        echo = (
            box.put(f"👤 {user}> {neutralize(line)}", ECHO)
            if slash and self.settings.messenger.echo_commands
            else None
        )
        sent = await self.link.send(packet)
        if sent is False:
            if echo is not None:
                box.discard(echo)
            return unreachable
        self.sent += 1
        logger.info("command %s from %s sent to room %s", task_id, user, route.room)
        if sent is None:
            return self.chat._("The relay is slow to take commands; yours may still arrive. Check with "
                               "'history' before sending it again.")  # fmt: skip
        if not slash:
            return ""  # an outgoing webhook: the line is in the channel already, the answer follows there
        return self.chat._("Sent to room {room} (task {task}); the answer will be posted in this channel.").format(
            room=route.room, task=task_id)  # fmt: skip

    # -- HTTP

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        try:
            if self._connections > MAX_CONNECTIONS:
                reply = Reply.plain(503, "busy\n")
            else:
                reply = await self._handle(reader, writer)
            writer.write(_response_bytes(reply))
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await writer.drain()
        except (OSError, TimeoutError):
            pass
        finally:
            self._connections -= 1
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(2):
                    await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Reply:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                request = await self._read_request(reader, writer)
        except TimeoutError:
            return Reply.plain(408, "request timeout\n")
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
            http.client.HTTPException,
        ):
            return Reply.plain(400, "bad request\n")
        if isinstance(request, Reply):
            return request
        try:
            return await self.answer(*request)
        except Exception:  # a bug must not take the endpoint down; the log has it
            logger.exception("answering a webhook request failed")
            return Reply.plain(500, "internal error\n")

    async def _read_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Reply | tuple[dict[str, str], bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        line, _, rest = head.partition(b"\r\n")
        method, target, version = line.decode("latin-1").split(" ")
        if not version.startswith("HTTP/1."):
            return Reply.plain(505, "HTTP/1.x only\n")
        message = http.client.parse_headers(io.BytesIO(rest))
        headers = {name.lower(): value for name, value in message.items()}
        if urlsplit(target).path != self.settings.listen.path:
            return Reply.plain(404, "not found\n")
        if method != "POST":
            return Reply.plain(405, "POST only\n")
        if "transfer-encoding" in headers or not headers.get("content-length", "").strip().isdigit():
            return Reply.plain(411, "a Content-Length is required\n")
        length = int(headers["content-length"].strip()[:12])
        if length > MAX_BODY:
            return Reply.plain(413, "request too large\n")
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return headers, await reader.readexactly(length)
