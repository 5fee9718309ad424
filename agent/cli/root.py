"""The ``agent`` command line: the ``main`` group, and :func:`entry`, which turns every error into one line.

Exit codes: 0 success; 1 the thing checked is not right (a runbook fails verification, a host failed), or an
unexpected internal error; 2 usage or configuration error (a bad option, a missing file or folder, a busy port).
Bad input never ends in a traceback: :func:`entry` turns every error into one line (a JSON object for ``--json``).

The commands live by audience: :mod:`agent.cli.authors` (runbook authors and approvers), :mod:`agent.cli.operators`
(the operator of an installed agent), :mod:`agent.cli.service` (installing it as a service) and
:mod:`agent.cli.reference` (the reference relay, chat console and demo); :mod:`agent.cli.common` holds what they
share.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import click

from agent import __version__
from agent.cli.authors import keys, runbooks
from agent.cli.common import DEBUG_ENV, EXIT_FAILED, EXIT_OK, EXIT_USAGE, describe_os_error, print_error
from agent.cli.operators import audit, checks, config_group, redact, run_agent
from agent.cli.reference import bridge_command, chat_command, demo, relay_command
from agent.cli.report import report
from agent.cli.service import service
from agent.config.schema import CONFIG_ENV

# Each command imports what it uses, inside its function: `agent runbooks verify` never loads asyncssh, and no
# command but `agent run` loads websockets, APScheduler, requests or psycopg2 (benchmarks/bench_process.py).


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="guardia-agent")
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=CONFIG_ENV,
    help=f"Agent config (TOML). Default: ${CONFIG_ENV}, else built-in defaults relative to the working directory.",
)
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="AGENT_ENV_FILE",
    help="Read environment variables (KEY=VALUE lines: relay URL, DB_*, tokens) from this file first; "
    "its values win over the inherited environment. The Windows service uses it.",
)
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, env_file: Path | None) -> None:
    """GUARDiA agent: a sandboxed runbook executor for locked-down internal networks.

    It runs only hash-locked, approved scripts from runbooks/ on hosts of its inventory, on command from a chat
    relay it dials out to, and answers with redacted output.

    Exit codes: 0 success, 1 a check failed (verification, a run), 2 usage or configuration error.
    """
    ctx.ensure_object(dict)["config_path"] = config_path
    if env_file is not None:
        from agent.config.envfile import InvalidEnvFile, read_env_file

        try:
            os.environ.update(read_env_file(env_file))
        except InvalidEnvFile as exc:
            print_error(f"environment file {env_file} is not valid:", EXIT_USAGE, False, exc.problems)
            sys.exit(EXIT_USAGE)


# runbook authors and approvers
main.add_command(runbooks)
main.add_command(keys)
# the operator of an installed agent
main.add_command(run_agent)
main.add_command(audit)
main.add_command(checks)
main.add_command(config_group)
main.add_command(redact)
main.add_command(report)
# installing it as a service
main.add_command(service)
# the reference tools
main.add_command(relay_command)
main.add_command(chat_command)
main.add_command(bridge_command)
main.add_command(demo)


# -- the entry point: no traceback, ever ------------------------------------------------------------------


def run_cli(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code; every error becomes one line (JSON with --json).

    Exit 2 for usage and input errors (a click usage error, a missing file or folder, a busy port, an unknown
    host), 1 for an unexpected error (``AGENT_DEBUG=1`` prints its traceback), 130 for Ctrl-C.
    """
    args = sys.argv[1:] if argv is None else argv
    as_json = "--json" in args
    try:
        code = main.main(args=args, prog_name="agent", standalone_mode=False)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_FAILED)
        if not isinstance(exc.code, int | None):
            click.echo(str(exc.code), err=True)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        hint = ""
        if exc.__class__ is not click.ClickException and getattr(exc, "ctx", None) is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"  # type: ignore[attr-defined]
        print_error(exc.format_message() + hint, exc.exit_code, as_json)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except OSError as exc:
        print_error(describe_os_error(exc), EXIT_USAGE, as_json)
        return EXIT_USAGE
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        print_error(
            f"unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for details)", EXIT_FAILED, as_json
        )
        return EXIT_FAILED
    return code if isinstance(code, int) else EXIT_OK


def entry() -> NoReturn:
    """The ``agent`` console script."""
    from agent.shell.startup import prepare_process

    prepare_process()
    sys.exit(run_cli())
