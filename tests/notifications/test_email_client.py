"""The SMTP client: where the relay is (URL or Airflow connection), typed errors, and STARTTLS with
authentication against a real aiosmtpd server with a certificate of its own."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from mes_rollout.config import ConfigError, load_settings
from mes_rollout.constants import DeliveryErrorKind
from notifications.email_client import (
    EmailClient,
    MessageRejectedError,
    PermanentEmailError,
    RelayConfigurationError,
    RelayUnreachableError,
    SmtpTarget,
    TemporaryEmailError,
    classify,
)
from notifications.loopback_smtp import free_port
from tests.notifications.relay import ScriptedRelay


def test_a_url_gives_host_port_tls_and_credentials() -> None:
    target = SmtpTarget.from_url("smtp+starttls://user%40x:p%3Ass@relay.example:2525?from=bot@example.fr&verify=false")
    assert (target.host, target.port, target.username, target.password) == ("relay.example", 2525, "user@x", "p:ss")
    assert target.starttls and not target.implicit_tls and not target.validate_certs
    assert target.sender_address == "bot@example.fr"
    assert "p:ss" not in repr(target)
    assert SmtpTarget.from_url("smtp://127.0.0.1:1025").starttls is False
    assert SmtpTarget.from_url("smtps://relay.example").port == 465
    with pytest.raises(ConfigError):
        SmtpTarget.from_url("http://relay.example")


def test_an_smtp_exchange_waits_mes_smtp_timeout_unless_the_url_names_its_own(tmp_path: Path) -> None:
    from notifications.sending import relay

    settings = load_settings({"MES_VAR_DIR": str(tmp_path), "MES_SMTP_URL": "smtp://relay.example:25", "MES_SMTP_TIMEOUT": "12"})
    with relay(settings) as target:
        assert target.timeout == 12.0
    own = load_settings({"MES_VAR_DIR": str(tmp_path), "MES_SMTP_URL": "smtp://relay.example:25?timeout=5", "MES_SMTP_TIMEOUT": "12"})
    with relay(own) as target:
        assert target.timeout == 5.0


def test_an_airflow_connection_is_read_as_the_smtp_provider_reads_it() -> None:
    connection = SimpleNamespace(
        host="relay.example", port=587, login="bot", password="secret",
        extra_dejson={"disable_ssl": True, "from_email": "Mon espace santé <noreply@example.fr>", "timeout": 10},
    )
    target = SmtpTarget.from_airflow_connection(connection)
    assert target.starttls and not target.implicit_tls
    assert (target.username, target.password, target.timeout) == ("bot", "secret", 10.0)
    assert target.sender_address == "noreply@example.fr"
    implicit = SmtpTarget.from_airflow_connection(SimpleNamespace(host="h", port=None, login=None, password=None,
                                                                  extra_dejson={}))
    assert implicit.implicit_tls and not implicit.starttls and implicit.port == 465


@pytest.mark.parametrize(
    ("error", "expected", "code"),
    [
        (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no", "a@b.fr")]),
         PermanentEmailError, 550),
        (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(452, "full", "a@b.fr")]),
         TemporaryEmailError, 452),
        (aiosmtplib.SMTPDataError(451, "later"), TemporaryEmailError, 451),
        (aiosmtplib.SMTPDataError(554, "spam"), MessageRejectedError, 554),
        (aiosmtplib.SMTPSenderRefused(553, "who?", "x@y.fr"), MessageRejectedError, 553),
        (aiosmtplib.SMTPAuthenticationError(535, "bad credentials"), RelayConfigurationError, 535),
        (aiosmtplib.SMTPServerDisconnected("gone"), RelayUnreachableError, None),
        (aiosmtplib.SMTPConnectError("refused"), RelayUnreachableError, None),
        (aiosmtplib.SMTPReadTimeoutError("slow"), RelayUnreachableError, None),
        (ConnectionRefusedError(111, "refused"), RelayUnreachableError, None),
        (TimeoutError(), RelayUnreachableError, None),
    ],
)
def test_errors_are_typed_by_what_the_caller_must_do(error: BaseException, expected: type, code: int | None) -> None:
    typed = classify(error)
    assert type(typed) is expected and typed.smtp_code == code
    assert "a@b.fr" not in str(typed)  # the relay's text (with the address) stays out
    assert typed.kind in DeliveryErrorKind
    assert isinstance(typed, TemporaryEmailError) == (typed.kind is DeliveryErrorKind.TEMPORARY)


def test_an_unknown_error_is_not_swallowed() -> None:
    with pytest.raises(KeyError):
        classify(KeyError("bug"))


def _certificate(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "relay.pem", folder / "relay.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
def tls_relay(tmp_path: Path) -> Iterator[tuple[ScriptedRelay, int, Path, list[Any]]]:
    """A relay that demands STARTTLS, then AUTH (login bot / secret)."""
    cert_path, key_path = _certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    logins: list[Any] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"bot", b"secret")
        logins.append((mechanism, ok, session.ssl is not None))
        return AuthResult(success=ok, handled=False)

    handler = ScriptedRelay()
    controller = Controller(
        handler, hostname="127.0.0.1", port=free_port(), tls_context=context, require_starttls=True,
        auth_required=True, authenticator=authenticator,
    )
    controller.start()
    try:
        yield handler, controller.port, cert_path, logins
    finally:
        controller.stop()


async def _send_one(target: SmtpTarget) -> None:
    client = EmailClient(target, connections=1)
    try:
        await client.connections[0].send("dest@example.fr", b"Subject: test\r\nMessage-ID: <x@y>\r\n\r\nbonjour\r\n")
    finally:
        await client.close()


def test_starttls_and_login_from_an_airflow_connection(tls_relay: tuple[ScriptedRelay, int, Path, list[Any]]) -> None:
    handler, port, cert_path, logins = tls_relay
    connection = SimpleNamespace(
        host="127.0.0.1", port=port, login="bot", password="secret",
        extra_dejson={"disable_ssl": True, "ca_file": str(cert_path)},
    )
    asyncio.run(_send_one(SmtpTarget.from_airflow_connection(connection)))
    assert len(handler.received) == 1
    assert logins and all(ok and over_tls for _, ok, over_tls in logins)


def test_wrong_credentials_stop_the_run_with_a_configuration_error(
    tls_relay: tuple[ScriptedRelay, int, Path, list[Any]],
) -> None:
    handler, port, cert_path, _ = tls_relay
    target = SmtpTarget.from_url(f"smtp+starttls://bot:wrong@127.0.0.1:{port}?ca_file={cert_path}")
    with pytest.raises(RelayConfigurationError):
        asyncio.run(_send_one(target))
    assert handler.received == []


def test_a_relay_that_is_not_there_is_a_temporary_error() -> None:
    with pytest.raises(TemporaryEmailError):
        asyncio.run(_send_one(SmtpTarget("127.0.0.1", free_port(), timeout=2)))
