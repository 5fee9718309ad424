"""Config sections beyond the catalog: inventory, redaction, secrets; and `agent redact` as an operator uses it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from agent.config.environment import Environment
from agent.config.schema import AgentConfig, load_config
from agent.errors import ConfigError

Cli = Callable[..., Result]

INVENTORY = """
agent_id = "agent-01"
[inventory]
known_hosts = "known_hosts"
user = "sm"
key_file = "id_ed25519"
passphrase_env = "SSH_KEY_PASS"
[inventory.hosts.was01]
address = "10.100.10.10"
[inventory.hosts.was02]
address = "10.100.10.11"
port = 2222
[inventory.hosts.db01]
address = "db01.corp.example"
user = "postgres"
[inventory.groups]
was = ["was01", "was02"]
[redaction]
secret_env = ["EXTRA_TOKEN"]
secret_files = ["relay.token"]
[[redaction.rules]]
name = "member"
pattern = "MBR[0-9]{8}"
replacement = "[MEMBER]"
"""


def write(folder: Path, text: str) -> Path:
    path = folder / "agent.toml"
    path.write_text(text, encoding="utf-8", newline="\n")
    (folder / "relay.token").write_text("file-secret-123\n", encoding="utf-8", newline="\n")
    return path


def test_inventory_resolves_groups_and_the_all_group(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, INVENTORY))
    inventory = config.inventory
    assert inventory.resolve(["was"]) == ["was01", "was02"]
    assert inventory.resolve(["db01", "was", "was01"]) == ["db01", "was01", "was02"]
    assert inventory.resolve(["all"]) == ["was01", "was02", "db01"]
    assert inventory.resolve(["nope"]) == []
    assert inventory.known_addresses()["db01.corp.example"] == "db01"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (('known_hosts = "known_hosts"\n', ""), "known_hosts is required"),
        (('was = ["was01", "was02"]', 'was = ["was01", "was09"]'), "groups.was: unknown hosts was09"),
        (('was = ["was01", "was02"]', 'all = ["was01"]'), "'all' is the built-in group"),
        (('user = "sm"\n', ""), "hosts.was01: no user"),
        (
            ("port = 2222", "port = 70000"),
            "inventory.hosts.was02.port: Input should be less than or equal to 65535",
        ),
        (
            ('pattern = "MBR[0-9]{8}"', 'pattern = "(?<=x)"'),
            "redaction.rules: rule 0: redaction rule 'member': pattern is not valid RE2 syntax",
        ),
        (('secret_env = ["EXTRA_TOKEN"]', 'secret_env = ["NOT-A-NAME"]'), "redaction.secret_env.0"),
    ],
)
def test_bad_inventory_or_redaction_config_is_refused(
    tmp_path: Path, change: tuple[str, str], problem: str
) -> None:
    assert change[0] in INVENTORY
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, INVENTORY.replace(*change)))
    assert any(problem.replace("Value error, ", "") in line for line in caught.value.problems), (
        caught.value.problems
    )


def test_secret_values_come_from_env_names_and_files(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, INVENTORY))
    env = {
        "DB_PASSWORD": "db-pw-123",
        "SSH_KEY_PASS": "key-pass-1",
        "EXTRA_TOKEN": "tok-456789",
        "HOME": "/root",
    }
    assert sorted(Environment(config, env).secret_values()) == [
        "db-pw-123",
        "file-secret-123",
        "key-pass-1",
        "tok-456789",
    ]
    (tmp_path / "relay.token").unlink()
    with pytest.raises(ConfigError, match="cannot read"):
        Environment(config, env).secret_values()


def test_default_config_has_no_hosts_and_redacts_builtin_kinds() -> None:
    config = AgentConfig()
    assert config.inventory.hosts == {}
    assert Environment(config, {}).redactor().redact("at 10.1.2.3") == "at [IP]"


def test_agent_redact_filters_stdin_like_the_agent(
    agent_cli: Cli, catalog_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(catalog_dir, INVENTORY)
    monkeypatch.setenv("DB_PASSWORD", "db-pw-123")
    text = (
        "conn 10.100.10.10:22 and db01.corp.example ok\n"
        "pw db-pw-123 file file-secret-123 member MBR12345678\n"
        "rrn 901010-1234567 at 192.168.0.9\n"
    )
    result = agent_cli("-c", "agent.toml", "redact", "--stats", input=text)
    assert result.exit_code == 0
    assert result.stdout == (
        "conn was01:22 and db01 ok\npw [SECRET] file [SECRET] member [MEMBER]\nrrn 901010-******* at [IP]\n"
    )
    assert "masked: extra:member: 1, host_name: 1, ipv4: 2, rrn: 1, secret: 2" in result.stderr


def test_agent_redact_applies_a_runbooks_own_rules(agent_cli: Cli, catalog_dir: Path) -> None:
    manifest = catalog_dir / "runbooks" / "mem_load.toml"
    manifest.write_text(
        manifest.read_text(encoding="utf-8") + '\n[[redact]]\nname = "lot"\npattern = "LOT-[0-9]{6}"\n',
        encoding="utf-8",
        newline="\n",
    )
    assert agent_cli("redact", "--runbook", "mem_load", input="lot LOT-123456\n").stdout == "lot [REDACTED]\n"
    assert agent_cli("redact", input="lot LOT-123456\n").stdout == "lot LOT-123456\n"
    missing = agent_cli("redact", "--runbook", "nope", input="")
    assert missing.exit_code == 2 and "no runbook named 'nope'" in missing.stderr


def test_config_check_lists_every_runtime_problem(
    agent_cli: Cli, catalog_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(catalog_dir, INVENTORY)
    monkeypatch.delenv("EXTERNAL_WS_URL", raising=False)
    monkeypatch.delenv("AGENT_RELAY_TOKEN", raising=False)
    result = agent_cli("-c", "agent.toml", "config", "check")
    assert result.exit_code == 2
    for problem in ["no relay URL", "inventory.known_hosts:", "hosts.was01.key_file:", "does not exist"]:
        assert problem in result.stderr
    assert "warning: no relay token" in result.stderr
    (catalog_dir / "known_hosts").write_text("", encoding="utf-8", newline="\n")
    (catalog_dir / "id_ed25519").write_text("", encoding="utf-8", newline="\n")
    monkeypatch.setenv("EXTERNAL_WS_URL", "wss://relay.example.invalid/agent")
    monkeypatch.setenv("AGENT_RELAY_TOKEN", "t0ken-123456")
    ok = agent_cli("-c", "agent.toml", "config", "check")
    assert ok.exit_code == 0, ok.stderr
    assert "OK: agent agent-01, 3 host(s)" in ok.stdout
    # A catalog problem: the agent would start, but not every runbook would run. Not "OK", exit 1 (issue 28).
    script = sorted((catalog_dir / "runbooks").glob("*.sh"))[0]
    script.write_text(script.read_text(encoding="utf-8") + "\necho changed\n", encoding="utf-8", newline="\n")
    tampered = agent_cli("-c", "agent.toml", "config", "check")
    assert tampered.exit_code == 1 and "OK:" not in tampered.stdout
    assert "NOT OK" in tampered.stderr and "1 catalog problem(s)" in tampered.stderr
    assert f"catalog: {script.stem}: modified_script" in tampered.stderr
