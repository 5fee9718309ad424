"""Serves trials and development: the reference tools ``agent relay``, ``agent chat``, ``agent bridge`` and
``agent demo``."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import click

from agent.cli.common import EXIT_USAGE, OPERATOR_TOKEN_ENV, fail, print_error
from agent.config.schema import COMMAND_KEY_ENV, RELAY_TOKEN_ENV

# The reference side (agent.reference.*) is imported inside each command: the agent itself never loads it.


@click.command("relay")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one)."
)
@click.option(
    "--config", "relay_config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The relay's TOML config: [agents.ID] rooms and tokens, [operators.NAME] credentials, offline_wait, "
    "notices, queue bounds (docs/protocol.md, 'Messages of the relay itself').",
)  # fmt: skip
@click.option("--check", is_flag=True, help="Check the config and the environment it names, list every problem, "
              "exit 0 (OK) or 2; start nothing.")  # fmt: skip
def relay_command(host: str, port: int, relay_config: Path | None, check: bool) -> None:
    """Run the reference relay: agents on /agent, operators on /operator (see docs/protocol.md).

    Tokens: $AGENT_RELAY_TOKEN for agents, $AGENT_OPERATOR_TOKEN for operators (unset: not checked), or per agent
    and per operator credential as the config names them. With $AGENT_COMMAND_KEY it signs every command for the
    agent it routes it to (the agent must have the same key). Deploying it: docs/install.md, "Deploying the relay".
    """
    from agent.reference.relay import (
        AGENT_PATH,
        OPERATOR_PATH,
        Relay,
        RelayConfigError,
        RelaySettings,
        load_relay_settings,
        relay_problems,
    )
    from agent.shell.app import install_signal_handlers

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        settings = load_relay_settings(relay_config) if relay_config else None
    except RelayConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    problems = relay_problems(settings or RelaySettings(), os.environ, host)
    if check:
        if problems:
            for problem in problems:
                click.echo(f"error: {problem}", err=True)
            click.echo(f"NOT OK: {len(problems)} problem(s): {'; '.join(problems)}", err=True)
            sys.exit(EXIT_USAGE)
        rooms = sorted({r for route in (settings or RelaySettings()).agents.values() for r in route.rooms})
        click.echo(f"OK: relay config: {len((settings or RelaySettings()).agents)} routed agent(s), "
                   f"{len((settings or RelaySettings()).operators)} operator credential(s), rooms: "
                   f"{', '.join(rooms) or '(any: one agent)'}")  # fmt: skip
        return

    async def serve() -> None:
        relay = Relay(
            os.environ.get(RELAY_TOKEN_ENV) or None,
            os.environ.get(OPERATOR_TOKEN_ENV) or None,
            command_key=os.environ.get(COMMAND_KEY_ENV) or None,
            settings=settings,
            environ=os.environ,
        )
        bound = await relay.start(host, port)
        for problem in problems:  # once it listens (a start that fails says only why it failed)
            logging.getLogger("agent.reference.relay").warning("config: %s", problem)
        click.echo(
            f"relay on ws://{host}:{bound}{AGENT_PATH} (agents) and ws://{host}:{bound}{OPERATOR_PATH}"
        )
        stopping = asyncio.Event()
        install_signal_handlers(stopping)
        await stopping.wait()
        await relay.stop()

    asyncio.run(serve())


@click.command("chat")
@click.option(
    "--relay", "relay_url", required=True, help="The relay's operator URL (ws://HOST:PORT/operator)."
)
@click.option("--room", required=True, help="The chat room to speak in.")
@click.option("--user", required=True, help="Who you are in the room (the relay's user_id).")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for an answer.")
@click.argument("line", nargs=-1)
def chat_command(relay_url: str, room: str, user: str, timeout: float, line: tuple[str, ...]) -> None:
    """Speak in a room through the relay, as a chat bridge would: one LINE, or an interactive prompt.

    The token comes from $AGENT_OPERATOR_TOKEN. Example: agent chat --relay ws://127.0.0.1:8765/operator
    --room ops --user kim help tail_log. Exit status: 0 when the answer succeeded (or the request is now held for
    an approver), 1 when it failed, 2 for a bad line or relay URL. Like the agent, it refuses a plain ws:// URL to a
    relay that is not on loopback (the operator token would travel in clear text).
    """
    import shlex

    from agent.config.schema import is_loopback_url, ws_url_problems

    problems = ws_url_problems(relay_url)
    if problems:
        fail(f"--relay: {'; '.join(problems)}", EXIT_USAGE)
    if relay_url.startswith("ws://") and not is_loopback_url(relay_url):
        fail("--relay: a plain ws:// URL is allowed for a loopback relay only (the operator token would travel "
              "in clear text): use wss://", EXIT_USAGE)  # fmt: skip

    from agent.reference.chat import ChatSession
    from agent.reference.operator_client import OperatorClient

    async def talk() -> int:
        try:
            client = await OperatorClient.connect(relay_url, token=os.environ.get(OPERATOR_TOKEN_ENV) or None)
        except (OSError, TimeoutError, ValueError) as exc:
            fail(f"cannot reach the relay at {relay_url}: {exc}", EXIT_USAGE)
        except Exception as exc:  # websockets' handshake errors (HTTP 401 and the like)
            fail(f"the relay refused the connection: {exc}", EXIT_USAGE)
        session = ChatSession(client, room, user, sys.stdout)
        try:
            if not line:
                await session.interactive()
                return 0
            try:
                typed = line[0] if len(line) == 1 else shlex.join(line)  # one quoted LINE, or its words
                answer = await session.ask(typed, timeout=timeout, echo=False, until_held=True)
            except ValueError as exc:
                fail(str(exc), EXIT_USAGE)
            except TimeoutError:
                fail(f"no answer within {timeout:g} s", 1)
            held = answer.get("event") == "TASK_PENDING_APPROVAL"
            return 0 if held or answer.get("payload", {}).get("status") == "SUCCESS" else 1
        finally:
            await client.close()

    sys.exit(asyncio.run(talk()))


@click.command("bridge", context_settings={"max_content_width": 110})
@click.option(
    "--config", "bridge_config", required=True, metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The bridge's TOML config: [listen], [relay], [messenger], [rooms.CHANNEL], [users] (docs/bridge.md).",
)  # fmt: skip
@click.option("--check", is_flag=True, help="Check the config and that every secret it names is there, print what "
              "it maps, and exit (0: usable, 2: not).")  # fmt: skip
def bridge_command(bridge_config: Path, check: bool) -> None:
    """Connect a messenger (Mattermost, Slack, Rocket.Chat, ...) to the relay with webhooks.

    Commands typed in a channel reach the bridge as an outgoing webhook or a slash command (form or JSON POST on
    http://HOST:PORT/PATH of [listen]); it checks the messenger's token (or Slack's signature), maps the channel
    to a relay room and the person to a relay user_id, and sends the command to the relay's operator side as
    `agent chat` would. Everything the room says (answers, progress, approval prompts, the relay's notices,
    scheduled reports) is posted to the channel's incoming webhook, in the same Korean text `agent chat` shows. A
    messenger that is down loses nothing: each channel's posts wait in their own bounded queue and are retried.

    Secrets never go in the file: it names environment variables (..._env) or files (..._file) that hold them.

    \b
    Example bridge.toml:
      [listen]
      host = "127.0.0.1"        # behind an HTTPS reverse proxy
      port = 8790
      path = "/guardia"
      [relay]
      url = "ws://127.0.0.1:8765/operator"
      token_env = "GUARDIA_BRIDGE_RELAY_TOKEN"
      [messenger]
      token_env = ["MATTERMOST_SLASH_TOKEN"]
      [rooms.hawos4dqtby53pd64o4a4cmeoo]     # the channel id
      room = "ops"
      webhook_env = "MATTERMOST_HOOK_OPS"     # its incoming webhook URL
      [users]
      rnina9994bde8mua79zqcg5hmo = "kim"      # messenger user_id = relay user_id

    Exit status: 0 stopped (SIGTERM/Ctrl-C) or --check passed; 2 a bad config (every problem listed) or a busy
    port. The guide: docs/bridge.md.
    """
    from agent.reference.webhook import Bridge, BridgeConfigError, load_bridge_config

    try:
        config = load_bridge_config(bridge_config, os.environ)
    except BridgeConfigError as exc:
        print_error(f"bridge config {bridge_config} is not usable ({len(exc.problems)} problem(s)):", EXIT_USAGE,
                    False, exc.problems)  # fmt: skip
        sys.exit(EXIT_USAGE)
    if check:
        click.echo(config.summary())
        return

    from agent.shell.app import install_signal_handlers

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    async def serve() -> None:
        bridge = Bridge(config)
        listen = config.settings.listen
        port = await bridge.start()
        click.echo(f"bridge on http://{listen.host}:{port}{listen.path} (the messenger's request URL, behind "
                   f"your HTTPS proxy); {len(config.routes)} channel(s)")  # fmt: skip
        stopping = asyncio.Event()
        install_signal_handlers(stopping)
        await stopping.wait()
        await bridge.stop()

    asyncio.run(serve())


@click.command()
@click.option(
    "--interactive", is_flag=True, help="Type chat commands yourself instead of the scripted scenes."
)
@click.option("-v", "--verbose", is_flag=True, help="Also show the agent's own log (INFO).")
@click.option(
    "--language", type=click.Choice(["ko", "en"]), default="ko", show_default=True,
    help="The chat language ([chat] language) of the demo's agent and transcript.",
)  # fmt: skip
def demo(interactive: bool, verbose: bool, language: str) -> None:
    """See the whole path work on this machine, in ~10 s, on loopback only.

    Starts the reference relay, an embedded SSH host and the agent with a temp copy of the bundled runbooks, then
    plays a chat conversation: a runbook that succeeds, a hostile argument refused, a tampered script refused, a
    timeout, and a scheduled report nobody asked for. Nothing outside a temp folder is touched.
    """
    from agent.reference.demo import run_demo

    sys.exit(run_demo(interactive=interactive, verbose=verbose, language=language))
