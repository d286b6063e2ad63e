"""The production stack under test: Celery workers with Redis, Airflow's metadata and the
pipeline's database on PostgreSQL, started once per test session and stopped in a finally.

Where PostgreSQL or Redis does not answer on loopback, the tests are skipped with the reason;
with MES_REQUIRE_POSTGRES=1 (CI) they fail instead.
"""

from __future__ import annotations

import os
import random
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import POSTGRES_ADMIN_URL, REQUIRE_POSTGRES, skip_or_fail_without_postgres

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# Small shards, so that one wave of tens of people fans out over several shards.
SHARD_SIZE = 5
WORKERS = 2
# Each shard talks to the relay for a few seconds (one message a second), so that two shards are
# under way at once and both workers take some (quick shards could all be picked up by whichever
# worker asked first), and so that a worker can be killed in the middle of one.
SMTP_RATE = 1
# A worker killed in the middle of a task is noticed within seconds, not Airflow's 5 minutes: the
# scheduler declares the task dead after HEARTBEAT_TIMEOUT seconds without a heartbeat, retries it
# RETRY_DELAY seconds later at most, and by then the dead sender's claims (SEND_LEASE) have run out
# so that the retry sends what it held.
HEARTBEAT_TIMEOUT = 15
RETRY_DELAY = 10
SEND_LEASE = 8
# The stack is shared by every test of tests/stack: `--dist loadgroup` runs them all in one
# pytest worker, one after the other, in the order of the files.
STACK_GROUP = pytest.mark.xdist_group("celery_stack")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`--dist loadgroup` on pytest 9: pytest-xdist 3.8 groups a test by appending `@group` to its
    `_nodeid`, which pytest 9's structured node ids no longer read (pytest-xdist issue #1386), so the
    stack tests would be spread over the workers, each starting a stack of its own. This sets the
    id the way xdist means it to be, and does nothing where xdist's own suffix took effect."""
    if not getattr(config.option, "loadgroup", False):
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # an older pytest: xdist's own suffix works
        return
    for item in items:
        names = {
            mark.args[0] if mark.args else mark.kwargs.get("name", "default")
            for mark in item.iter_markers("xdist_group")
        }
        suffix = "@" + "_".join(sorted(str(name) for name in names))
        if names and not item.nodeid.endswith(suffix) and hasattr(item, "_id"):
            item._id = NodeId.parse(item.nodeid + suffix)


def _skip_or_fail(reason: str) -> None:
    if REQUIRE_POSTGRES:
        pytest.fail(f"MES_REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(f"skipped: {reason}")


def _free_redis_database() -> int:
    """A Redis database number that holds nothing (not 0, which a developer's stack uses)."""
    import redis

    try:
        for number in random.sample(range(2, 16), 14):
            client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number, socket_connect_timeout=3)
            try:
                # Claim it for this session: another session seeing the key takes another number.
                if client.dbsize() == 0 and client.set("mes-rollout:test-claim", str(os.getpid()), nx=True):
                    return number
            finally:
                client.close()
    except Exception as error:  # noqa: BLE001 - any failure means: no Redis to test against
        _skip_or_fail(f"Redis not reachable at {REDIS_HOST}:{REDIS_PORT}: {type(error).__name__}")
    _skip_or_fail("no free Redis database number (2-15)")
    raise AssertionError("unreachable")


def _create_database(name: str) -> str:
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _drop_database(name: str) -> None:
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def celery_stack() -> Iterator[object]:
    """The stack (`console.stack.running`): two Celery workers, a fresh pipeline database and a
    fresh Airflow metadata database, a Redis database of its own; everything stopped and dropped
    at the end of the session."""
    skip_or_fail_without_postgres()
    redis_database = _free_redis_database()
    import redis

    from console.stack import plan_stack, running
    from mes_rollout.config import load_settings

    suffix = uuid.uuid4().hex[:10]
    pipeline_name, metadata_name = f"mes_stack_{suffix}", f"airflow_stack_{suffix}"
    root = Path(tempfile.mkdtemp(prefix="mes-stack-test-"))
    saved = {name: os.environ.get(name) for name in ("MES_SMTP_URL",)}
    os.environ.pop("MES_SMTP_URL", None)  # the embedded relay, as on the in-process path
    try:
        pipeline_url = _create_database(pipeline_name)
        settings = load_settings(
            {**os.environ, "MES_DATABASE_URL": pipeline_url, "MES_VAR_DIR": str(root / "var")}
        )
        plan = plan_stack(
            settings,
            home=root / "airflow",
            workers=WORKERS,
            port=_free_port(),
            redis_url=f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_database}",
            metadata_database=metadata_name,
            # One task at a time per worker: two shards at once run on two workers.
            worker_concurrency=1,
            unpause=(
                "enrolment_wave",
                "notification_sending",
                "space_creation",
                "dmp_migration",
                "decisions_intake",
                "delivery_feedback",
            ),  # fmt: skip
            task_heartbeat_timeout=HEARTBEAT_TIMEOUT,
            max_task_retry_delay=RETRY_DELAY,
            # The stack's processes only (a worker started again gets them too); not the tests'.
            environment={
                "MES_SHARD_SIZE": str(SHARD_SIZE),
                "MES_SMTP_RATE": str(SMTP_RATE),
                "MES_SEND_LEASE": str(SEND_LEASE),
            },
        )
        with running(plan) as stack:
            yield stack
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=redis_database).flushdb()
        _drop_database(pipeline_name)
        _drop_database(metadata_name)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
