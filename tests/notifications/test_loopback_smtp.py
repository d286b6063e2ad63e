"""The embedded loopback relay: the emails it keeps are owner-only files in an owner-only folder,
and sending through it writes no recipient address to the logs."""

from __future__ import annotations

import datetime as dt
import logging
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import Engine

from mes_rollout.config import load_settings
from notifications.sending import relay, send_emails
from tests.notifications.factories import adult, create_notification, create_wave, load_people

SEND_DAY = dt.date(2022, 1, 31)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_embedded_relay_keeps_owner_only_files_and_logs_no_address(
    engine: Engine, settings_env: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    people = [adult(email="secret.one@example.fr"), adult(email="secret.two@example.fr")]
    load_people(engine, tmp_path, people)
    wave = create_wave(engine, settings_env)
    for person in people:
        create_notification(engine, settings_env, wave, person)
    settings = load_settings()
    assert settings.is_embedded_smtp
    logging.getLogger("mail.log").setLevel(logging.NOTSET)  # as a fresh process has it: INFO passes
    caplog.set_level(logging.DEBUG)
    old_umask = os.umask(0o022)  # a usual umask: files would come out 0644, folders 0755
    try:
        with relay(settings) as target:
            summary = send_emails(engine, settings, target, logical_date=SEND_DAY, run_id="embedded", shard=None)
    finally:
        os.umask(old_umask)

    assert summary.sent == 2
    kept = sorted(settings.outbox_dir.glob("*.eml"))
    assert len(kept) == 2
    assert {b"secret.one@example.fr" in path.read_bytes() or b"secret.two@example.fr" in path.read_bytes()
            for path in kept} == {True}
    assert stat.S_IMODE(settings.outbox_dir.stat().st_mode) == 0o700
    assert {oct(stat.S_IMODE(path.stat().st_mode)) for path in kept} == {"0o600"}
    assert any(record.name == "notifications.sending" for record in caplog.records)  # logs were captured
    assert "secret" not in caplog.text and "@example.fr" not in caplog.text
    for person in people:
        assert person["nir"] not in caplog.text
