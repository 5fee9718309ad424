"""The agent's configuration: ``agent.toml`` validated by pydantic, secrets only from the environment.

The config file is found from ``--config`` or ``AGENT_CONFIG``. Without one the defaults apply, with paths relative
to the current directory, so every ``agent runbooks …`` command works from the project root with no flags. With
one, relative paths in it are relative to the file's own directory. A config that does not validate is refused
with every problem listed (:class:`~agent.errors.ConfigError`).
"""

from __future__ import annotations

import codecs
import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal, cast
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tomli
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from agent.catalog.manifest import TARGET_PATTERN, RedactRuleModel, format_validation_error
from agent.catalog.signing import ApproverKey
from agent.chat.i18n import DEFAULT_TIMEZONE, Chat
from agent.errors import ConfigError, SigningError

CONFIG_ENV = "AGENT_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CatalogConfig(_Section):
    #: Folder of ``NAME.toml`` manifests and ``NAME.sh`` scripts.
    dir: Path = Path("runbooks")
    #: The hash lock of that folder.
    lock: Path = Path("runbooks.lock")
    #: Public keys (``ssh-ed25519 AAAA… name``) whose signatures approve the lock. Empty: no signature needed.
    approver_keys: list[str] = Field(default_factory=list)
    #: How many distinct approver keys must have signed the lock when keys are configured.
    min_signatures: int = Field(default=1, ge=1)
    #: Seconds between two looks at the lock file's size and time; a changed lock is verified and, when it verifies,
    #: used without a restart (``0``: only at start).
    watch_interval: float = Field(default=3.0, ge=0)

    @field_validator("approver_keys")
    @classmethod
    def _keys_parse(cls, keys: list[str]) -> list[str]:
        for index, line in enumerate(keys):
            try:
                ApproverKey.parse(line)
            except SigningError as exc:
                raise ValueError(f"approver key #{index + 1}: {exc}") from None
        return keys

    def approvers(self) -> list[ApproverKey]:
        return [ApproverKey.parse(line) for line in self.approver_keys]


Alias = Annotated[str, StringConstraints(pattern=TARGET_PATTERN)]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
#: The group every inventory host belongs to.
ALL_HOSTS = "all"
#: Environment variables whose values are always secrets when set.
RELAY_URL_ENV = "EXTERNAL_WS_URL"
RELAY_TOKEN_ENV = "AGENT_RELAY_TOKEN"  # noqa: S105 - the variable's name
#: The key for signed commands; when set, unsigned commands are refused.
COMMAND_KEY_ENV = "AGENT_COMMAND_KEY"
SECRET_ENV_NAMES = ("DB_PASSWORD", RELAY_TOKEN_ENV, "AGENT_SIGNING_PASSPHRASE", COMMAND_KEY_ENV)


class HostConfig(_Section):
    """One SSH host: how to reach it. Chat only ever sees its alias."""

    address: Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:%-]+$")]
    port: int = Field(default=22, ge=1, le=65535)
    user: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_.-]{0,31}$")] | None = None
    key_file: Path | None = None
    #: Environment variable holding the key file's passphrase, if it has one.
    passphrase_env: EnvName | None = None
    #: What the host's output is written in: a legacy Korean host's ``"cp949"`` (or ``"euc-kr"``). Its output is
    #: read as that, so the room shows its Korean as Korean and redaction reads the text. Undeclared output that
    #: is not UTF-8 is still scanned for Korean labels in CP949 (agent/redaction/normalise.py).
    encoding: str = "utf-8"

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            name = codecs.lookup(value).name
        except LookupError:
            raise ValueError(f"unknown encoding {value!r} (for example utf-8, cp949, euc-kr)") from None
        if "a".encode(name) != b"a" or "\n".encode(name) != b"\n":
            raise ValueError(
                f"encoding {value!r} is not ASCII-compatible (UTF-16 and UTF-32 are not host output)"
            )
        return name


class InventoryConfig(_Section):
    #: OpenSSH known_hosts file with every host's key. Required as soon as there are hosts: keys are always checked.
    known_hosts: Path | None = None
    #: Defaults for hosts that do not set their own.
    user: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_.-]{0,31}$")] | None = None
    key_file: Path | None = None
    passphrase_env: EnvName | None = None
    hosts: dict[Alias, HostConfig] = Field(default_factory=dict)
    groups: dict[Alias, list[Alias]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> InventoryConfig:
        problems = []
        if self.hosts and self.known_hosts is None:
            problems.append(
                "known_hosts is required when hosts are configured (host keys are always verified)"
            )
        for alias, host in self.hosts.items():
            if (host.user or self.user) is None:
                problems.append(f"hosts.{alias}: no user (set it here or inventory.user)")
            if (host.key_file or self.key_file) is None:
                problems.append(f"hosts.{alias}: no key_file (set it here or inventory.key_file)")
        if ALL_HOSTS in self.hosts or ALL_HOSTS in self.groups:
            problems.append(f"{ALL_HOSTS!r} is the built-in group of every host; use another name")
        for group, members in self.groups.items():
            if group in self.hosts:
                problems.append(f"groups.{group}: a host has the same alias")
            unknown = sorted(set(members) - set(self.hosts))
            if unknown:
                problems.append(f"groups.{group}: unknown hosts {', '.join(unknown)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def resolve(self, targets: list[str]) -> list[str]:
        """Expand aliases and group names to host aliases, in order, without repeats (unknown names dropped)."""
        seen: dict[str, None] = {}
        for name in targets:
            if name == ALL_HOSTS:
                members = list(self.hosts)
            elif name in self.groups:
                members = self.groups[name]
            else:
                members = [name] if name in self.hosts else []
            seen.update(dict.fromkeys(members))
        return list(seen)

    def known_addresses(self) -> dict[str, str]:
        """Address or host name → alias, for redaction."""
        return {host.address: alias for alias, host in self.hosts.items()}


class ExecutorConfig(_Section):
    #: Runs in flight at once over all hosts.
    max_concurrency: int = Field(default=32, ge=1, le=1024)
    #: Sessions at once on one connection; OpenSSH's MaxSessions defaults to 10. More runs on a host wait.
    max_sessions_per_host: int = Field(default=8, ge=1, le=64)
    #: TCP connect plus SSH handshake and login, in seconds.
    connect_timeout: float = Field(default=10.0, gt=0, le=300)
    #: SSH keepalive on pooled connections, in seconds (None: off).
    keepalive_interval: float | None = Field(default=30.0, gt=0)
    #: A pooled connection unused this long is closed, in seconds (None: kept).
    idle_timeout: float | None = Field(default=300.0, gt=0)
    #: After the time limit, TERM; after this many more seconds, KILL (on the host, by coreutils timeout).
    kill_grace: float = Field(default=5.0, gt=0, le=300)
    #: Ceiling on any runbook's output per stream, whatever its manifest says, in bytes.
    max_output: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)


class RedactionConfig(_Section):
    #: More environment variables whose values are secrets to mask wherever they appear.
    secret_env: list[EnvName] = Field(default_factory=list)
    #: Files whose contents (stripped) are secrets to mask.
    secret_files: list[Path] = Field(default_factory=list)
    rules: list[RedactRuleModel] = Field(default_factory=list)

    @field_validator("rules", mode="wrap")
    @classmethod
    def _rules_quiet(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> list[RedactRuleModel]:
        """A bad rule is named by its position, never shown: its pattern may spell out the secret it is for.

        (RE2's own error text quotes the pattern, so it is replaced here by a fixed one.)
        """
        try:
            return cast(list[RedactRuleModel], handler(value))
        except ValidationError as exc:
            problems = []
            for error in exc.errors(include_input=False, include_url=False):
                where = ".".join(str(part) for part in error["loc"])
                message = error["msg"].removeprefix("Value error, ")
                if "does not compile" in message:
                    message = message.split("pattern does not compile", 1)[0] + (
                        "pattern is not valid RE2 syntax (not shown: a pattern may hold a secret)"
                    )
                problems.append(f"rule {where}: {message}" if where else message)
            raise ValueError("; ".join(problems)) from None


def ws_url_problems(url: str) -> list[str]:
    """What is wrong with a relay URL (scheme, host, port), without echoing it (it may carry credentials)."""

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a port that is not a number or out of range, a bad IPv6 literal
        return [
            f"not a usable URL ({'port out of range 1-65535' if 'port' in str(exc).lower() else 'malformed'})"
        ]
    problems = []
    if parts.scheme not in ("ws", "wss"):
        problems.append("the scheme must be ws:// or wss://")
    if not parts.hostname:
        problems.append("no host")
    if port == 0:
        problems.append("port out of range 1-65535")
    if any(c.isspace() for c in url):
        problems.append("contains white space")
    return problems


class RelayConfig(_Section):
    #: wss://… of the relay. $EXTERNAL_WS_URL, when set, wins (the name existing deployments use).
    url: str | None = None
    #: File holding the relay token; $AGENT_RELAY_TOKEN, when set, wins.
    token_file: Path | None = None
    #: CA bundle that signs the relay's certificate (default: the system's).
    ca_file: Path | None = None
    #: An HTTP(S)/SOCKS proxy URL. Unset: no proxy, whatever the environment says.
    proxy: str | None = None
    ping_interval: float = Field(default=20.0, gt=0)
    open_timeout: float = Field(default=10.0, gt=0)
    #: Longest wait between reconnection attempts, in seconds.
    max_backoff: float = Field(default=60.0, ge=1)
    #: "v1": the current protocol (HELLO, ACK, msg_id); "v0": the original one (one TASK_FINISHED per command and
    #: nothing else; docs/protocol.md, "The original protocol (v0)").
    protocol: Literal["v1", "v0"] = "v1"
    #: v0 only: push REPORTs too, as TASK_FINISHED frames with task_id "report-<id>" (off: v0 sends no reports).
    v0_reports: bool = False
    #: v0 only: an answer sent but not known to be read when the connection drops is sent again after the next
    #: connection ("unread", the default: a v0 relay may see it twice, byte-identical, keyed by task_id), or never
    #: ("never": it is counted delivered once written, and lost if the relay did not read it).
    v0_resend: Literal["unread", "never"] = "unread"

    @field_validator("url")
    @classmethod
    def _url_usable(cls, url: str | None) -> str | None:
        if url is not None and (problems := ws_url_problems(url)):
            raise ValueError("; ".join(problems))
        return url

    #: Allow a plain ws:// URL to a relay that is not on loopback (the token then travels in clear text).
    allow_insecure: bool = False


class ChatConfig(_Section):
    """How the agent speaks in chat rooms: language of every text, timezone of every time shown."""

    #: "ko" (Korean, the default) or "en". Error codes, logs and JSON keys stay English either way.
    language: Literal["ko", "en"] = "ko"
    #: An IANA zone name (zoneinfo; the tzdata package provides the database on Windows).
    timezone: str = DEFAULT_TIMEZONE

    @field_validator("timezone")
    @classmethod
    def _zone_known(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown time zone {name[:64]!r} (an IANA name such as Asia/Seoul)") from None
        return name

    def chat(self) -> Chat:
        return Chat(self.language, self.timezone)


class StateConfig(_Section):
    #: Folder for the outbox (outbox.sqlite3), the audit log (audit.jsonl) and kept output (outputs/).
    dir: Path = Path("var")
    #: Cap on the unacknowledged messages kept for the relay, in bytes; over it the oldest REPORT and TASK_ACCEPTED
    #: messages are dropped (and that is reported); a TASK_FINISHED never is.
    max_outbox_bytes: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024)
    #: ``FULL``: a result is on disk before it is sent (survives a power cut). ``NORMAL``: survives a killed process
    #: only, a little faster (see benchmarks/bench_link.py).
    synchronous: Literal["FULL", "NORMAL"] = "FULL"


class OutputsConfig(_Section):
    #: How long the full output of runs is kept on the agent PC, in days.
    retention_days: float = Field(default=7.0, gt=0)
    #: Lines per GET_OUTPUT page.
    page_lines: int = Field(default=200, ge=10, le=5000)
    #: Caps on the kept output: total bytes and number of runs. Over either, the oldest runs are removed first (and
    #: that is reported); the newest run is always kept.
    max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024 * 1024)
    max_runs: int = Field(default=10_000, ge=1)


class TasksConfig(_Section):
    #: Commands running at once; more wait for a slot.
    max_tasks: int = Field(default=64, ge=1, le=4096)
    #: How long a finished task's result is kept to answer a repeated task_id, in days.
    retention_days: float = Field(default=30.0, gt=0)
    #: On SIGTERM/SIGINT, how long running tasks may finish before they are recorded as interrupted, in seconds.
    shutdown_grace: float = Field(default=30.0, ge=0)
    #: A runbook run still going after this many seconds posts progress lines (TASK_PROGRESS); None: never.
    progress_after: float | None = Field(default=10.0, gt=0)


CheckName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
ParamType = Literal["date", "integer", "string"]
#: FETCH_MES_QC's query unless the config defines its own ``db.queries.mes_qc``: the original agent's, ``ORDER BY
#: reg_date DESC`` with PostgreSQL's NULL order (rows without a reg_date first).
MES_QC_SQL = (
    "SELECT work_date, prc_code, err_msg, reg_date FROM tb_mes_wrk_prc_i "
    "WHERE work_date = %(date)s ORDER BY reg_date DESC LIMIT 10"
)
#: A count_sql stops counting here (the room reads "at least 10,000"), so a huge day costs a bounded scan.
COUNT_LIMIT = 10_000
#: How many rows FETCH_MES_QC's day has in all, so the room reads "10 shown (15 in all)".
MES_QC_COUNT_SQL = (
    "SELECT count(*) FROM (SELECT 1 FROM tb_mes_wrk_prc_i WHERE work_date = %(date)s LIMIT 10001) AS matched"
)


class HttpCheck(_Section):
    """GET a health URL (Spring actuator style); UP is OK, anything else is DOWN."""

    kind: Literal["http"]
    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$")]
    timeout: float = Field(default=3.0, gt=0, le=120)
    #: False, or a CA bundle path, for an internal certificate.
    verify_tls: bool | Path = True


class DiskCheck(_Section):
    """Free space of a path on the agent PC (works on Windows too)."""

    kind: Literal["disk"]
    path: Path
    warn_percent: float = Field(default=80.0, gt=0, le=100)
    critical_percent: float = Field(default=90.0, gt=0, le=100)


class DbCheck(_Section):
    """A named query from ``db.queries``; thresholds on the row count or on one column of the first row."""

    kind: Literal["db"]
    query: CheckName
    #: Values for the query's parameters; a date is any text PostgreSQL reads as one ("2026-09-18", "today",
    #: "yesterday"), read by the database in its session's timezone.
    args: dict[str, str | int] = Field(default_factory=dict)
    warn_rows: int | None = Field(default=None, ge=0)
    critical_rows: int | None = Field(default=None, ge=0)
    value_column: str | None = None
    warn_above: float | None = None
    critical_above: float | None = None


class TcpCheck(_Section):
    kind: Literal["tcp"]
    host: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    port: int = Field(ge=1, le=65535)
    timeout: float = Field(default=3.0, gt=0, le=120)


class RunbookCheck(_Section):
    """An approved runbook on hosts: every exit 0 is OK, an exit 1 is WARN, other failures DOWN."""

    kind: Literal["runbook"]
    runbook: str
    hosts: list[str] = Field(min_length=1)
    args: dict[str, str | int] = Field(default_factory=dict)


Check = Annotated[HttpCheck | DiskCheck | DbCheck | TcpCheck | RunbookCheck, Field(discriminator="kind")]


class DbQuery(_Section):
    #: Fixed SQL with ``%(name)s`` placeholders (psycopg2, PyMySQL); values are always bound, never formatted in.
    sql: Annotated[str, StringConstraints(min_length=1)]
    params: dict[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")], ParamType] = Field(
        default_factory=dict
    )
    description: str = ""
    #: Optional fixed SQL (same parameters) whose one value is how many rows match in all, so a cut list can say
    #: "10 shown (15 in all)"; bound it (``LIMIT 10001`` in a subquery: more is shown as "at least 10,000").
    count_sql: Annotated[str, StringConstraints(min_length=1)] | None = None


DbKind = Literal["postgresql", "mysql"]


class DbConfig(_Section):
    """The database of DB checks; where to connect comes from DB_HOST, DB_PORT, DB_USER, DB_PASSWORD, DB_NAME."""

    #: Which driver: PostgreSQL (psycopg2) or MySQL/MariaDB (PyMySQL). The queries are written for that engine;
    #: both take ``%(name)s`` placeholders.
    kind: DbKind = "postgresql"
    connect_timeout: int = Field(default=5, ge=1, le=120)
    statement_timeout: float = Field(default=10.0, gt=0, le=3600)
    max_rows: int = Field(default=100, ge=1, le=10_000)
    queries: dict[CheckName, DbQuery] = Field(default_factory=dict)

    def query(self, name: str) -> DbQuery | None:
        if name in self.queries:
            return self.queries[name]
        if name == "mes_qc":
            return DbQuery(
                sql=MES_QC_SQL,
                params={"date": "date"},
                description="newest MES QC errors of a day",
                count_sql=MES_QC_COUNT_SQL,
            )
        return None


QUIET_HOURS = r"^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$"


class Schedule(_Section):
    name: CheckName
    #: "checks": run ``checks`` and report per ``notify``; "summary": sum up every check.
    kind: Literal["checks", "summary"] = "checks"
    checks: list[CheckName] = Field(default_factory=list)
    #: Every this many seconds, or a crontab line ("0 9 * * *"); exactly one of the two.
    interval: float | None = Field(default=None, gt=0)
    cron: Annotated[str, StringConstraints(pattern=r"^\S+( \S+){4}$")] | None = None
    jitter: float = Field(default=0.0, ge=0)
    room: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    notify: Literal["always", "on_change", "on_failure"] = "on_change"
    #: A run later than this is reported as missed rather than run late, in seconds.
    misfire_grace: float = Field(default=60.0, gt=0)
    #: A check still failing is reported again once this many seconds passed since it was last reported.
    remind_after: float | None = Field(default=None, gt=0)
    #: "22:00-07:00" in the chat timezone: only failures go out; the rest is collected into one message after.
    quiet_hours: Annotated[str, StringConstraints(pattern=QUIET_HOURS)] | None = None

    @model_validator(mode="after")
    def _one_trigger(self) -> Schedule:
        if (self.interval is None) == (self.cron is None):
            raise ValueError("give exactly one of interval or cron")
        if self.kind == "checks" and not self.checks:
            raise ValueError("a checks schedule needs checks")
        return self


class ActionsConfig(_Section):
    """What the existing chat actions run."""

    #: CHECK_INTERNAL_WAS_STATUS runs this check (kind http).
    was_status_check: CheckName | None = None
    #: CHECK_DISK_SPACE runs these checks (default: every disk check).
    disk_space_checks: list[CheckName] | None = None
    #: FETCH_MES_QC runs this query with the requested date.
    mes_qc_query: CheckName = "mes_qc"


Role = Literal["viewer", "operator", "approver"]


class AccessConfig(_Section):
    """Who may do what from chat. With no users listed, every user may do what each room and runbook allows."""

    #: Chat user id (as the relay passes it) → roles. viewer: list, checks, outputs; operator: also runbooks;
    #: approver: APPROVE/REJECT others' requests.
    users: dict[Annotated[str, StringConstraints(min_length=1, max_length=128)], list[Role]] = Field(
        default_factory=dict
    )
    #: How long a request waiting for a second person's approval stays valid, in seconds.
    approval_window: float = Field(default=600.0, gt=0, le=7 * 86400)
    #: Requests that may wait for approval at once, per requester and per room; one more is refused with a reason.
    max_held_per_user: int = Field(default=5, ge=1, le=1000)
    max_held_per_room: int = Field(default=20, ge=1, le=10000)
    #: Signed commands ($AGENT_COMMAND_KEY set): how far a command's timestamp may be from the agent's clock.
    clock_skew: float = Field(default=300.0, gt=0, le=3600)

    def roles_of(self, user: str | None) -> set[str] | None:
        """The user's roles; None when access control is off (no users configured)."""
        if not self.users:
            return None
        return set(self.users.get(user or "", []))


class AgentConfig(_Section):
    agent_id: Annotated[str, StringConstraints(pattern=TARGET_PATTERN)] = "guardia-agent"
    #: The room told about catalog problems at start (and other notices).
    operations_room: Annotated[str, StringConstraints(min_length=1, max_length=128)] = "ops"
    catalog: CatalogConfig = Field(default_factory=CatalogConfig)
    inventory: InventoryConfig = Field(default_factory=InventoryConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    redaction: RedactionConfig = Field(default_factory=RedactionConfig)
    relay: RelayConfig = Field(default_factory=RelayConfig)
    chat: ChatConfig = Field(default_factory=ChatConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    checks: dict[CheckName, Check] = Field(default_factory=dict)
    db: DbConfig = Field(default_factory=DbConfig)
    schedules: list[Schedule] = Field(default_factory=list)
    actions: ActionsConfig = Field(default_factory=ActionsConfig)
    access: AccessConfig = Field(default_factory=AccessConfig)

    @model_validator(mode="after")
    def _references(self) -> AgentConfig:
        problems = []
        for name, check in self.checks.items():
            if isinstance(check, DbCheck) and self.db.query(check.query) is None:
                problems.append(f"checks.{name}: no query {check.query!r} in db.queries")
        names = [s.name for s in self.schedules]
        if len(names) != len(set(names)):
            problems.append("schedules: two schedules have the same name")
        for index, schedule in enumerate(self.schedules):
            unknown = sorted(set(schedule.checks) - set(self.checks))
            if unknown:
                problems.append(f"schedules.{index}: unknown checks {', '.join(unknown)}")
        referenced = [self.actions.was_status_check, *(self.actions.disk_space_checks or [])]
        for name in filter(None, referenced):
            if name not in self.checks:
                problems.append(f"actions: unknown check {name!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    #: Directory that relative paths are resolved against (the config file's folder, or the working directory).
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    def path(self, relative: Path) -> Path:
        return relative if relative.is_absolute() else self.base_dir / relative


def load_config(path: Path | str | None = None) -> AgentConfig:
    """Load the configuration.

    Args:
        path: the TOML file; ``None`` takes ``$AGENT_CONFIG`` and, without it, the built-in defaults.

    Raises:
        ConfigError: the file is missing, not TOML, or does not validate; every problem is listed.
    """
    if path is None:
        path = os.environ.get(CONFIG_ENV) or None
    if path is None:
        return AgentConfig()
    path = Path(path)
    try:
        raw = tomli.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror}"]) from None
    except (UnicodeDecodeError, tomli.TOMLDecodeError) as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from None
    if "base_dir" in raw:
        raise ConfigError(str(path), ["base_dir: not a setting (paths are relative to the config file)"])
    try:
        return AgentConfig.model_validate({**raw, "base_dir": path.resolve().parent})
    except ValidationError as exc:
        raise ConfigError(str(path), format_validation_error(exc)) from None


def is_loopback_url(url: str) -> bool:
    """True when the URL's host is localhost or a loopback address (127.0.0.0/8, ::1)."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
