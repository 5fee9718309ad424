"""The SSH executor: runs a planned runbook on its hosts over pooled asyncssh connections.

The only module that imports asyncssh; nothing above it sees an ``asyncssh.*`` exception. Every way a run can go
wrong on one host becomes that host's :class:`~agent.runs.results.HostResult` (never an exception), so a host that is
down or slow fails only its own row.

What it guarantees, per host:

* only what the agent's config says is used to connect: the host key is checked against the configured
  known_hosts file (never skipped), the configured key is the only identity; nothing of the agent user's OpenSSH
  client setup is read (no ``~/.ssh/config``, ``~/.ssh/known_hosts``, default identities, ssh-agent or
  ``SSH_AUTH_SOCK``; see :func:`_connection_options`);
* the script's bytes are hashed again right before they are sent, and refused if they differ from the lock;
* the script goes to ``bash -s -- ARG…`` on stdin in a clean environment, under the host-side time limit and
  containment of :func:`agent.runs.remote.remote_command`, and the agent's own deadline here; on expiry the
  channel is signalled and closed. The containment (a PID namespace, a subreaper or the marker sweep) is the
  strongest the host offers, asked once per connection (:data:`agent.runs.remote.PROBE`), and each host's result
  says which one ran (``containment``);
* the persistence points of the host user that the run changed (crontab, ``~/.ssh/rc``, ...) come back on a
  keyed last line of stderr (:class:`agent.runs.remote.PersistenceTrailer`), stripped before redaction, and fill
  the result's ``persistence``;
* stdout and stderr are redacted and capped as they stream in; only what is kept is redacted, so memory and CPU
  stay bounded whatever the host prints;
* runbooks that change state never run twice at once on one host: the second is refused as busy.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import contextvars
import ctypes.util
import dataclasses
import hashlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.chat.i18n import Msg
from agent.config.schema import ExecutorConfig, InventoryConfig
from agent.errors import ConfigError
from agent.redaction import CappedRedactor, Redactor, cap_output
from agent.runs.plan import RunPlan
from agent.runs.remote import (
    PROBE,
    TIMEOUT_EXIT_CODES,
    Containment,
    HostSupport,
    PersistenceTrailer,
    choose,
    new_run_id,
    parse_probe,
    remote_command,
)
from agent.runs.results import HostResult, Outcome, RunResult

# asyncssh looks for liboqs (the sntrup761 key exchange) as it is imported, with ctypes.util.find_library: on
# Linux that runs `ldconfig -p`, then `gcc` and `ld` from PATH, once for "oqs" and again for "liboqs" (25-45 ms
# of every command that runs a runbook, and three programs started from the relay PC's PATH by a service). The
# agent does not use liboqs: it is none of its dependencies, and which key exchanges it offers should not depend
# on what else the relay PC has installed. Its post-quantum key exchange is ML-KEM from cryptography
# (mlkem768x25519), which asyncssh finds without the search; curve25519 and the rest are unchanged. Every other
# library asyncssh looks for (nettle for UMAC) is still found as before.
_find_library = ctypes.util.find_library


def _find_library_but_liboqs(name: str) -> str | None:
    return None if name in ("oqs", "liboqs") else _find_library(name)


ctypes.util.find_library = _find_library_but_liboqs
try:
    import asyncssh
finally:
    ctypes.util.find_library = _find_library

logger = logging.getLogger(__name__)

#: How long after the runbook's limit (plus the kill grace) the agent gives up on the host reporting it.
AGENT_DEADLINE_MARGIN = 2.0
READ_SIZE = 64 * 1024
#: How long to wait for sshd to confirm a channel's close before freeing its session slot anyway.
CLOSE_TIMEOUT = 5.0
#: How long the containment probe of a new connection may take before the host gets the marker sweep.
PROBE_TIMEOUT = 10.0
#: Waits before trying again when a live connection refuses a new session channel.
SESSION_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
#: Ciphers offered, in order. AES-GCM first: one call into OpenSSL per packet where chacha20-poly1305 (asyncssh's
#: first choice) takes several from Python, about 0.85 ms less client CPU per run (bench_executor); it uses the
#: hosts' and the relay PC's AES instructions, and AES is the cipher Korean public-sector crypto reviews (KCMVP)
#: expect. chacha20-poly1305 and AES-CTR stay for hosts that lack GCM (OpenSSH before 6.2).
CIPHERS = (
    "aes256-gcm@openssh.com", "aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com",
    "aes256-ctr", "aes192-ctr", "aes128-ctr",
)  # fmt: skip


class _HostFailure(Exception):
    """Internal: a host could not be used; carries the outcome and a room-safe message."""

    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message


@dataclass
class _Pooled:
    connection: asyncssh.SSHClientConnection
    sessions: asyncio.Semaphore
    #: What containment the host offers (probed once, right after connecting).
    support: HostSupport = field(default_factory=HostSupport)
    last_used: float = field(default_factory=time.monotonic)


class _Client(asyncssh.SSHClient):
    """Offers the configured key, once; keeps its connection so the host key handler can answer on it.

    The key is given here rather than as ``client_keys``: asyncssh turns any ``client_keys`` into an ssh-agent
    lookup (``agent_path=None`` becomes ``""``, which on Windows means Pageant or the OpenSSH agent pipe), and
    only ``client_keys=None`` switches the agent off on every OS.
    """

    connection: asyncssh.SSHClientConnection | None = None

    def __init__(self, key: asyncssh.SSHKey) -> None:
        self._key: asyncssh.SSHKey | None = key

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self.connection = conn

    def public_key_auth_requested(self) -> asyncssh.SSHKey | None:
        key, self._key = self._key, None
        return key

    def answer_host_keys(self, *_keys: object) -> None:
        """Right after login, OpenSSH announces its host keys (``hostkeys-00@openssh.com``) and wants no reply.
        sshd leaves Nagle on for sessions without a pty, so its next packet, our first channel's confirmation,
        then waits for our delayed ACK of that announcement: ~40 ms on the first run of every new connection.
        Sending any packet now carries the ACK at once, on every OS (TCP_QUICKACK would be Linux-only)."""
        if self.connection is not None:
            with contextlib.suppress(asyncssh.Error, OSError):
                self.connection.send_debug("host keys received")


class Executor:
    """Runs plans on the inventory's hosts. Create it once; it pools one connection per host.

    Args:
        inventory: the hosts.
        settings: limits and timeouts.
        base_dir: what relative key and known_hosts paths in the config are relative to.
        environ: where key passphrases are read from (the agent's environment, agent/config/environment.py).
        containment: use this containment mode on every host instead of the strongest each offers (tests and
            benchmarks); a host that does not offer it fails its run with an internal error.

    Raises:
        ConfigError: the known_hosts file cannot be read.
    """

    def __init__(
        self,
        inventory: InventoryConfig,
        settings: ExecutorConfig,
        base_dir: Path,
        environ: Mapping[str, str],
        containment: Containment | None = None,
    ) -> None:
        self.inventory = inventory
        self._forced = containment
        self.settings = settings
        self._base_dir = base_dir
        self._environ = environ
        self._known_hosts: asyncssh.SSHKnownHosts | None = None
        if inventory.known_hosts is not None:
            path = self._path(inventory.known_hosts)
            try:
                self._known_hosts = asyncssh.read_known_hosts(str(path))
            except (OSError, ValueError) as exc:
                raise ConfigError("inventory.known_hosts", [f"{path}: cannot be read ({exc})"]) from None
        self._keys: dict[tuple[Path, str | None], asyncssh.SSHKey] = {}
        self._pool: dict[str, _Pooled] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._busy: set[str] = set()
        self._settling: set[asyncio.Task[None]] = set()
        self._limit = asyncio.Semaphore(settings.max_concurrency)
        #: Runs that STOP may end, by their key (the task id): see :meth:`run_stoppable`.
        self._stoppable: dict[str, _StopToken] = {}

    def _path(self, path: Path) -> Path:
        return path if path.is_absolute() else self._base_dir / path

    # -- connections ------------------------------------------------------------------------------------------

    def _client_key(self, alias: str) -> asyncssh.SSHKey:
        host = self.inventory.hosts[alias]
        key_file = host.key_file or self.inventory.key_file
        passphrase_env = host.passphrase_env or self.inventory.passphrase_env
        assert key_file is not None  # the config refuses hosts without a key
        path = self._path(key_file)
        cache_key = (path, passphrase_env)
        if cache_key not in self._keys:
            passphrase = self._environ.get(passphrase_env) if passphrase_env else None
            try:
                self._keys[cache_key] = asyncssh.read_private_key(str(path), passphrase)
            except (OSError, asyncssh.KeyImportError) as exc:
                logger.error("client key for %s cannot be loaded: %s", alias, exc)
                raise _HostFailure(
                    Outcome.ERROR, Msg("the agent's SSH key for this host cannot be loaded")
                ) from None
        return self._keys[cache_key]

    async def _connect(self, alias: str) -> asyncssh.SSHClientConnection:
        host = self.inventory.hosts[alias]
        if self._known_hosts is None:  # pragma: no cover - the config requires known_hosts with hosts
            raise _HostFailure(
                Outcome.REFUSED, Msg("no known_hosts configured; host keys cannot be verified")
            )
        client = _Client(self._client_key(alias))
        username = host.user or self.inventory.user
        assert username is not None  # the config refuses hosts without a user
        options = _connection_options(
            client,
            username=username,
            port=host.port,
            known_hosts=self._known_hosts,
            connect_timeout=self.settings.connect_timeout,
            keepalive_interval=self.settings.keepalive_interval or 0,
        )
        try:
            # config=None here too: connect() merges its own arguments over the options, and its default,
            # config=(), means "read ~/.ssh/config" again whatever the options said.
            return await asyncssh.connect(host.address, config=None, options=options)
        except asyncssh.HostKeyNotVerifiable:
            raise _HostFailure(
                Outcome.REFUSED, Msg("host key not trusted: missing from known_hosts or different from it")
            ) from None
        except asyncssh.PermissionDenied:
            raise _HostFailure(
                Outcome.REFUSED, Msg("login refused: the agent's key was not accepted")
            ) from None
        except ConnectionRefusedError:
            raise _HostFailure(Outcome.UNREACHABLE, Msg("connection refused")) from None
        except TimeoutError:
            raise _HostFailure(Outcome.UNREACHABLE, Msg("connect timed out")) from None
        except socket.gaierror:
            raise _HostFailure(Outcome.UNREACHABLE, Msg("host name does not resolve")) from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise _HostFailure(
                Outcome.UNREACHABLE, Msg("cannot reach host ({reason})", reason=reason)
            ) from None
        except asyncssh.Error as exc:
            logger.warning("SSH handshake with %s failed: %s", alias, exc)
            raise _HostFailure(
                Outcome.ERROR, Msg("SSH handshake failed ({error})", error=type(exc).__name__)
            ) from None

    async def _acquire(self, alias: str) -> _Pooled:
        """A live pooled connection to ``alias``, connecting (once, however many wait) when there is none."""
        lock = self._connecting.setdefault(alias, asyncio.Lock())
        async with lock:
            pooled = self._pool.get(alias)
            idle = self.settings.idle_timeout
            if pooled is not None and (
                pooled.connection.is_closed()
                or (idle is not None and time.monotonic() - pooled.last_used > idle)
            ):
                self._forget(alias, pooled)
                pooled = None
            if pooled is None:
                connection = await self._connect(alias)
                support = await _probe(alias, connection)
                pooled = _Pooled(connection, asyncio.Semaphore(self.settings.max_sessions_per_host), support)
                self._pool[alias] = pooled
                logger.info("connected to %s", alias)
            pooled.last_used = time.monotonic()
            return pooled

    async def close(self) -> None:
        """Close every pooled connection."""
        pooled = list(self._pool.values())
        self._pool.clear()
        for entry in pooled:
            entry.connection.close()
        for entry in pooled:
            await entry.connection.wait_closed()
        await asyncio.gather(*self._settling, return_exceptions=True)

    # -- running ------------------------------------------------------------------------------------------------

    async def run(
        self, plan: RunPlan, redactor: Redactor, on_host: Callable[[HostResult], None] | None = None
    ) -> RunResult:
        """Run ``plan`` on each of its hosts concurrently (bounded by ``max_concurrency``).

        Args:
            on_host: called with each host's result as soon as it is there (progress for long runs).

        Returns:
            One result per host, in the plan's host order. Never raises for a host's failure.
        """

        async def one(alias: str) -> HostResult:
            result = await self._run_host(plan, alias, redactor)
            if on_host is not None:
                on_host(result)
            return result

        results = await asyncio.gather(*(one(alias) for alias in plan.hosts))
        return RunResult(runbook=plan.name, script_sha256=plan.runbook.script_sha256, hosts=list(results))

    async def run_stoppable(
        self,
        plan: RunPlan,
        redactor: Redactor,
        key: str,
        on_host: Callable[[HostResult], None] | None = None,
    ) -> RunResult:
        """:meth:`run`, as a run that :meth:`stop` can end by ``key`` (the task id); see :func:`_run_stoppable`."""
        return await _run_stoppable(self, plan, redactor, key, on_host)

    def stop(self, key: str, by: str | None) -> bool:
        """End the run started by :meth:`run_stoppable` with ``key``; False when none is going (:func:`_stop_run`)."""
        return _stop_run(self, key, by)

    async def _run_host(self, plan: RunPlan, alias: str, redactor: Redactor) -> HostResult:
        started = time.monotonic()
        log = logging.LoggerAdapter(logger, {"host": alias})
        changes_state = plan.runbook.manifest.changes_state
        if changes_state:
            if alias in self._busy:
                return HostResult(
                    alias,
                    Outcome.REFUSED,
                    message=Msg("busy: a state-changing runbook is already running on this host"),
                )
            self._busy.add(alias)
        try:
            async with self._limit:
                result = await self._execute(plan, alias, redactor, started)
        except _HostFailure as failure:
            result = HostResult(
                alias, failure.outcome, duration=time.monotonic() - started, message=failure.message
            )
        except Exception:
            log.exception("run of %s on %s failed unexpectedly", plan.name, alias)
            result = HostResult(
                alias, Outcome.ERROR, duration=time.monotonic() - started, message=Msg("internal error")
            )
        finally:
            if changes_state:
                self._busy.discard(alias)
        log.info(
            "%s on %s: %s exit=%s %.2fs",
            plan.name,
            alias,
            result.status.value,
            result.exit_code,
            result.duration,
        )
        return result

    async def _execute(self, plan: RunPlan, alias: str, redactor: Redactor, started: float) -> HostResult:
        runbook = plan.runbook
        script = runbook.script
        if hashlib.sha256(script).hexdigest() != runbook.script_sha256:
            raise _HostFailure(Outcome.REFUSED, Msg("the script no longer matches the lock"))
        manifest = runbook.manifest

        def command_for(support: HostSupport) -> tuple[str, Containment]:
            mode = choose(
                support,
                leaves_daemon=manifest.leaves_daemon,
                host_view=manifest.host_view,
                forced=self._forced,
            )
            command = remote_command(
                manifest.interpreter,
                plan.argv,
                manifest.timeout,
                self.settings.kill_grace,
                run_id=new_run_id(os.urandom(16)),
                containment=mode,
                prctl=support.prctl,
                persistence=True,
            )
            return command, mode

        # Capture up to the agent's ceiling (kept on the agent PC); the chat view is the manifest's cap of that.
        out, err = (
            CappedRedactor(redactor, self.settings.max_output),
            CappedRedactor(redactor, self.settings.max_output),
        )
        view = min(manifest.max_output, self.settings.max_output)
        # The wrapper's persistence trailer ends stderr, carrying a key sent ahead of the script on stdin (so
        # the script cannot know it): stripped here, before redaction, and read into the result.
        key = new_run_id(os.urandom(16))
        trailer = PersistenceTrailer(key)
        completed: asyncssh.SSHCompletedProcess | None = None
        async with self._session(alias, command_for) as (process, containment):
            try:
                async with asyncio.timeout(
                    manifest.timeout + self.settings.kill_grace + AGENT_DEADLINE_MARGIN
                ):
                    process.stdin.write(key.encode() + b"\n" + script)
                    process.stdin.write_eof()
                    encoding = self.inventory.hosts[alias].encoding
                    await asyncio.gather(
                        _pump(process.stdout, out, encoding),
                        _pump(process.stderr, _Stripped(trailer, err), encoding),
                    )
                    completed = await process.wait()
            except TimeoutError:
                _abandon(process)
            except (asyncssh.Error, OSError) as exc:
                raise _HostFailure(
                    Outcome.ERROR, Msg("connection lost during the run ({error})", error=type(exc).__name__)
                ) from None
        if rest := trailer.finish():
            err.feed(rest)
        stdout_full, full_out_truncated, full_out_cut = out.result()
        stderr_full, full_err_truncated, full_err_cut = err.result()
        stdout, out_truncated, out_cut = cap_output(stdout_full.encode(), view)
        stderr, err_truncated, err_cut = cap_output(stderr_full.encode(), view)
        out_truncated, out_cut = out_truncated or full_out_truncated, out_cut + full_out_cut
        err_truncated, err_cut = err_truncated or full_err_truncated, err_cut + full_err_cut
        duration = time.monotonic() - started
        signal = completed.exit_signal[0] if completed is not None and completed.exit_signal else None
        exit_code = None if completed is None or signal else completed.exit_status
        # coreutils timeout exits 124 (TERM worked) or dies with its group by KILL (after the grace).
        hit_limit = duration >= manifest.timeout and (
            exit_code in TIMEOUT_EXIT_CODES or signal in ("KILL", "TERM")
        )
        message: str
        if completed is None or hit_limit:
            status, message = (
                Outcome.TIMEOUT,
                Msg("killed at the {limit:g} s time limit", limit=manifest.timeout),
            )
        elif exit_code == 0:
            status, message = Outcome.SUCCESS, ""
        elif signal is not None:
            status, message = Outcome.FAIL, Msg("killed by signal {signal}", signal=signal)
        elif exit_code is None:
            status, message = Outcome.ERROR, Msg("the script ended without an exit status")
        else:
            status, message = Outcome.FAIL, Msg("exit status {code}", code=exit_code)
        return HostResult(
            host=alias,
            status=status,
            exit_code=exit_code,
            duration=duration,
            stdout=stdout,
            stderr=stderr,
            truncated=out_truncated or err_truncated,
            stdout_cut=out_cut,
            stderr_cut=err_cut,
            message=message,
            output_sha256=_digest(stdout_full, stderr_full),
            stdout_full=stdout_full,
            stderr_full=stderr_full,
            containment=containment.value,
            persistence=trailer.points,
        )

    @contextlib.asynccontextmanager
    async def _session(
        self, alias: str, command_for: Callable[[HostSupport], tuple[str, Containment]]
    ) -> AsyncIterator[tuple[asyncssh.SSHClientProcess[bytes], Containment]]:
        """A session channel running the command ``command_for`` makes for the host (by what it offers), holding
        one of the connection's session slots; with the containment that command uses.

        A pooled connection that died since its last use is replaced once, transparently. A channel refused on a
        live connection is tried again a few times (sshd can still be counting a closed session against
        MaxSessions), then it is this host's error; the connection stays for the other sessions on it.
        """
        reconnected = False
        for refused in range(len(SESSION_RETRY_DELAYS) + 1):
            pooled = await self._acquire(alias)
            command, containment = command_for(pooled.support)
            await pooled.sessions.acquire()
            stop = _STOP.get()
            if stop is not None and stop.by is not None:  # stopped before this host began: it never starts
                pooled.sessions.release()
                raise _HostFailure(Outcome.STOPPED, stop.message())
            try:
                process = await pooled.connection.create_process(command, encoding=None)
            except (asyncssh.Error, OSError) as exc:
                pooled.sessions.release()
                stale = pooled.connection.is_closed() or isinstance(
                    exc, asyncssh.ConnectionLost | asyncssh.DisconnectError
                )
                if stale:
                    self._forget(alias, pooled)
                    if not reconnected:
                        reconnected = True
                        logger.info("pooled connection to %s is gone; reconnecting", alias)
                        continue
                elif isinstance(exc, asyncssh.ChannelOpenError) and refused < len(SESSION_RETRY_DELAYS):
                    # sshd may still count a session we saw close (MaxSessions): wait, do not fail.
                    logger.debug("%s refused a session (%s); retrying", alias, exc.reason)
                    await asyncio.sleep(SESSION_RETRY_DELAYS[refused])
                    continue
                raise _HostFailure(
                    Outcome.ERROR, Msg("the host refused a session ({error})", error=type(exc).__name__)
                ) from None
            if stop is not None:
                stop.processes.add(process)
            try:
                yield process, containment
            finally:
                if stop is not None:
                    stop.processes.discard(process)
                process.close()
                # sshd counts the session against MaxSessions until it has closed it too: the slot is freed once
                # it has, in the background, so the result does not wait for that round trip.
                settle = asyncio.create_task(self._settle(alias, pooled, process))
                self._settling.add(settle)
                settle.add_done_callback(self._settling.discard)
            return

    async def _settle(self, alias: str, pooled: _Pooled, process: asyncssh.SSHClientProcess[bytes]) -> None:
        try:
            with contextlib.suppress(TimeoutError, asyncssh.Error, OSError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await process.wait_closed()
        finally:
            pooled.sessions.release()
            if pooled.connection.is_closed():
                self._forget(alias, pooled)

    def _forget(self, alias: str, pooled: _Pooled) -> None:
        """Remove ``pooled`` from the pool if it is still the entry for ``alias``, and close it."""
        if self._pool.get(alias) is pooled:
            del self._pool[alias]
        pooled.connection.close()


async def _probe(alias: str, connection: asyncssh.SSHClientConnection) -> HostSupport:
    """What containment the host behind ``connection`` offers (:data:`agent.runs.remote.PROBE`, one session).

    A probe that fails or times out is not the run's failure: the host gets the marker sweep, which needs nothing.
    """
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            done = await connection.run(PROBE, stdin=asyncssh.DEVNULL, encoding="utf-8", errors="replace")
    except (TimeoutError, asyncssh.Error, OSError) as exc:
        logger.warning(
            "containment probe on %s failed (%s); using the marker sweep", alias, type(exc).__name__
        )
        return HostSupport()
    support = parse_probe(done.stdout if isinstance(done.stdout, str) else "")
    logger.info(
        "containment on %s: PID namespace %s, subreaper %s",
        alias,
        "yes" if support.namespace else "no",
        "yes" if support.prctl is not None else "no",
    )
    return support


def _connection_options(
    client: _Client,
    *,
    username: str,
    port: int,
    known_hosts: asyncssh.SSHKnownHosts,
    connect_timeout: float | None,
    keepalive_interval: float,
) -> asyncssh.SSHClientConnectionOptions:
    """Options that leave asyncssh no default to take from the agent user's home or environment.

    Every option asyncssh would otherwise fill from ``~/.ssh/config`` (``ProxyCommand``, ``ProxyJump``,
    ``Hostname``, ``RequestTTY``, ``SetEnv``/``SendEnv``, ``IdentityFile``, ``IdentityAgent``, ``PKCS11Provider``,
    canonicalisation, GSSAPI, host-based auth), from ``~/.ssh`` itself (``known_hosts``, ``id_*`` and their
    ``.pub`` files, ``ca-bundle.crt``, ``crt/``) or from ``SSH_AUTH_SOCK`` is given explicitly.
    """
    return asyncssh.SSHClientConnectionOptions(
        client_factory=lambda: client,
        server_host_keys_handler=client.answer_host_keys,
        config=None,  # no OpenSSH client config file at all
        username=username,
        port=port,
        known_hosts=known_hosts,
        client_keys=None,  # the key comes from _Client; None also turns the ssh-agent and PKCS#11 off
        agent_path=None,
        agent_identities=None,
        agent_forwarding=False,
        pkcs11_provider=None,
        x509_trusted_certs=None,
        x509_trusted_cert_paths=[],
        proxy_command=None,
        canonicalize_hostname=False,
        host_based_auth=False,
        password_auth=False,
        kbdint_auth=False,
        public_key_auth=True,
        gss_host=None,
        gss_kex=False,
        gss_auth=False,
        preferred_auth="publickey",
        request_pty=False,
        encryption_algs=CIPHERS,
        env={},
        send_env=None,
        x11_forwarding=False,
        connect_timeout=connect_timeout,
        keepalive_interval=keepalive_interval,
        keepalive_count_max=3,
    )


def _digest(stdout: str, stderr: str) -> str:
    digest = hashlib.sha256(stdout.encode())
    digest.update(b"\0")
    digest.update(stderr.encode())
    return digest.hexdigest()


class _Stripped:
    """A run's stderr on its way to ``stream``, the persistence trailer held back (read by ``trailer.finish()``)."""

    def __init__(self, trailer: PersistenceTrailer, stream: CappedRedactor) -> None:
        self.trailer, self.stream = trailer, stream

    def feed(self, chunk: bytes) -> None:
        if passed := self.trailer.feed(chunk):
            self.stream.feed(passed)


async def _pump(
    reader: asyncssh.SSHReader[bytes], stream: CappedRedactor | _Stripped, encoding: str = "utf-8"
) -> None:
    """Feed a stream of the host's output to ``stream``; a host that writes another encoding (``cp949``) is read
    as text in it and fed as UTF-8, a character split across reads held back by the decoder."""
    if encoding == "utf-8":
        while chunk := await reader.read(READ_SIZE):
            stream.feed(chunk)
        return
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    while chunk := await reader.read(READ_SIZE):
        stream.feed(decoder.decode(chunk).encode("utf-8", "surrogatepass"))
    stream.feed(decoder.decode(b"", final=True).encode("utf-8", "surrogatepass"))


def _abandon(process: asyncssh.SSHClientProcess[bytes]) -> None:
    """The agent's deadline passed (the host's own limit, grace and clean-up should have ended the run already):
    ask sshd to send TERM to the wrapper, which then stops the run and cleans up as at its own limit, whatever
    its containment mode (a KILL would end the wrapper before its sweep); the caller then closes the channel."""
    with contextlib.suppress(asyncssh.Error, OSError):  # the channel may already be gone
        process.send_signal("TERM")


# -- stopping a run (STOP) ----------------------------------------------------------------------------------------


@dataclass
class _StopToken:
    """One stoppable run: its live session channels, and who stopped it (None: still running)."""

    by: str | None = None
    processes: set[asyncssh.SSHClientProcess[bytes]] = field(default_factory=set)

    def message(self) -> str:
        return Msg("stopped by {user}", user=self.by)


#: The stoppable run the current task belongs to (set by :meth:`Executor.run_stoppable`; its hosts' tasks inherit it).
_STOP: contextvars.ContextVar[_StopToken | None] = contextvars.ContextVar("guardia_stop", default=None)


async def _run_stoppable(
    owner: Executor,
    plan: RunPlan,
    redactor: Redactor,
    key: str,
    on_host: Callable[[HostResult], None] | None = None,
) -> RunResult:
    """:meth:`Executor.run`, which :func:`_stop_run` can end: each host not done by then is ``STOPPED``."""
    token = _StopToken()
    owner._stoppable[key] = token
    reset = _STOP.set(token)

    def stopped(result: HostResult) -> HostResult:
        # Only a run the stop ended (the wrapper's TERM exit) is STOPPED; one that failed to connect, was refused
        # or ended on its own keeps its outcome.
        if token.by is None or result.status is not Outcome.FAIL:
            if token.by is not None and result.status is Outcome.TIMEOUT:
                return dataclasses.replace(result, message=Msg(
                    "{user} asked to stop it, but it ran on to its time limit: this server's sshd did not pass the "
                    "stop signal (an older OpenSSH, such as 7.4)", user=token.by))  # fmt: skip
            return result
        return dataclasses.replace(result, status=Outcome.STOPPED, message=token.message())

    def told(result: HostResult) -> None:
        if on_host is not None:
            on_host(stopped(result))

    try:
        result = await owner.run(plan, redactor, on_host=told)
    finally:
        _STOP.reset(reset)
        if owner._stoppable.get(key) is token:
            del owner._stoppable[key]
    return dataclasses.replace(result, hosts=[stopped(h) for h in result.hosts])


def _stop_run(executor: Executor, key: str, by: str | None) -> bool:
    """End the run started with ``key`` on every host, through the host-side kill a timeout uses (:func:`_abandon`:
    TERM to the wrapper, which stops the run and sweeps its survivors); hosts not started yet never start.

    Returns:
        False when no run with that key is going (it ended, or never was).
    """
    token = executor._stoppable.get(key)
    if token is None:
        return False
    token.by = by or "?"
    for process in list(token.processes):
        _abandon(process)
    return True
