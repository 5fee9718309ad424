"""wss:// to the relay: a certificate from the configured CA is accepted, any other is refused and logged."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.reference.relay import Relay
from tests.conftest import RELAY_TOKEN, RunningApp
from tests.waiting import eventually

pytestmark = pytest.mark.external_service


def make_ca_and_server_cert(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it; returns the CA file and a server context."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "guardia test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "relay.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "relay.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "relay.pem", folder / "relay.key")
    return folder / "ca.pem", context


@pytest.mark.parametrize("trusted", [True, False])
async def test_wss_trusts_only_the_configured_ca(
    agent_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
    caplog: pytest.LogCaptureFixture,
    trusted: bool,
) -> None:
    ca_file, context = make_ca_and_server_cert(tmp_path_factory.mktemp("pki"))
    relay = Relay(agent_token=RELAY_TOKEN)
    port = await relay.start("127.0.0.1", 0, ssl_context=context)
    config = (agent_home / "agent.toml").read_text(encoding="utf-8")
    if trusted:
        config = config.replace("[relay]\n", f'[relay]\nca_file = "{ca_file}"\n')
    (agent_home / "agent.toml").write_text(config, encoding="utf-8", newline="\n")
    env = {"EXTERNAL_WS_URL": f"wss://127.0.0.1:{port}/agent", "AGENT_RELAY_TOKEN": RELAY_TOKEN}
    caplog.set_level("INFO", logger="agent")
    running = RunningApp.of(agent_home / "agent.toml", env)
    try:
        if trusted:
            await eventually(lambda: relay.hello is not None, 10, what="the HELLO over TLS")
            assert relay.hello["payload"]["agent_id"] == "test-agent"
        else:
            await eventually(lambda: "TLS certificate is not trusted" in caplog.text, 10)
            await eventually(lambda: "reconnecting in" in caplog.text, 10, what="the next-attempt decision")
            errors = [r for r in caplog.records if "not trusted" in r.getMessage()]
            assert errors and all(r.levelname == "ERROR" for r in errors)
            waits = [float(w) for w in re.findall(r"reconnecting in ([0-9.]+) s", caplog.text)]
            assert waits and all(w == 2.0 for w in waits)  # max_backoff at once, never a fast retry
            assert not relay.agent_connected.is_set()
    finally:
        await running.stop()
        await relay.stop()
