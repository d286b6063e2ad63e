"""Schema upgrades: dialect-only files apply to their database only, and are recorded everywhere."""

from __future__ import annotations

from sqlalchemy import Engine, text

from mes_rollout.db import schema_files, upgrade


def test_every_schema_file_is_recorded_and_a_second_upgrade_applies_nothing(engine: Engine) -> None:
    with engine.connect() as connection:
        recorded = connection.execute(text("SELECT version FROM schema_migrations ORDER BY version")).scalars().all()
    assert recorded == [version for version, _ in schema_files()]
    assert upgrade(engine) == []


def test_persons_provenance_is_a_foreign_key_on_sqlite_only(engine: Engine) -> None:
    # 0005 is "-- dialect: postgresql": the check per row cost a register load about 5 s a million.
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            foreign_keys = connection.execute(
                text(
                    "SELECT COUNT(*) FROM pg_constraint WHERE conrelid = 'persons'::regclass AND contype = 'f'"
                )
            ).scalar_one()
            assert foreign_keys == 0
        else:
            targets = [row[2] for row in connection.exec_driver_sql("PRAGMA foreign_key_list(persons)")]
            assert targets == ["input_files"]
