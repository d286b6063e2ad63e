"""Benchmarks of sending (`mes-rollout bench-emails`) and printing (`mes-rollout bench-letters`).

Emails, all against one aiosmtpd server running in a process of its own, in the same run:
- limit: a bare aiosmtplib sender pushing pre-built messages over the same number of connections
  (what this machine and this server can take);
- end to end: the pipeline's own sending (read, render, claim, hand over, record, start the
  windows) of a synthetic approved wave, in a child process, at two volumes (peak memory of each);
- baseline: Airflow's own email sending (airflow.utils.email.send_email_smtp: one SMTP
  connection per email, smtplib), over a smaller count.
Letters: the pipeline's printing and posting of a synthetic letter wave at two volumes.
Each measured part runs in a fresh process, so that its peak memory is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from mes_rollout.config import load_settings

SEND_DATE = dt.date(2022, 1, 31)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(mode: str, env: dict[str, str], *args: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "console.bench_sending", mode, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"benchmark step {mode} failed:\n{completed.stderr[-4000:]}")
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


class _Sink:
    """The aiosmtpd server, in a process of its own, counting what it receives."""

    def __init__(self) -> None:
        from notifications.loopback_smtp import free_port

        self.port = free_port()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "notifications.loopback_smtp", "--port", str(self.port), "--mode", "count"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        if self._process.stdout.readline().strip() != "ready":
            raise RuntimeError("the benchmark SMTP server did not start")

    def stop(self) -> int:
        self._process.terminate()
        out, _ = self._process.communicate(timeout=30)
        return int(out.strip().split()[-1])


def _workspace(kind: str) -> Path:
    folder = load_settings().var_dir / "bench" / f"{kind}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _prepare(folder: Path, count: int, channel: str) -> dict[str, str]:
    """A database with an approved wave of `count` messages; the environment that points at it."""
    from console.synth.notifications import synthetic_wave
    from mes_rollout.db import make_engine, upgrade

    env = {"MES_VAR_DIR": str(folder / "var"), "MES_DATABASE_URL": f"sqlite:///{folder / 'mes.db'}"}
    engine = make_engine(env["MES_DATABASE_URL"])
    upgrade(engine)
    synthetic_wave(engine, Path(env["MES_VAR_DIR"]), count, channel=channel, send_date=SEND_DATE)
    engine.dispose()
    return env


def bench_emails(count: int, small_count: int, baseline_count: int, connections: int) -> dict[str, Any]:
    folder = _workspace("emails")
    volumes = sorted({small_count, count})
    prepared = {volume: _prepare(folder / f"wave-{volume}", volume, "email") for volume in volumes}
    sink = _Sink()
    try:
        port = str(sink.port)
        bare = _child("bare", {}, "--port", port, "--count", str(count), "--connections", str(connections))
        runs = {
            volume: _child("send", prepared[volume], "--port", port, "--connections", str(connections))
            for volume in volumes
        }
        baseline = _child("airflow-baseline", {}, "--port", port, "--count", str(baseline_count))
    finally:
        received = sink.stop()
    end_to_end = runs[count]
    expected = count + sum(run["sent"] for run in runs.values()) + baseline["sent"]
    return {
        "emails": count,
        "connections": connections,
        "limit_bare_aiosmtplib_per_s": round(bare["rate"], 1),
        "end_to_end_per_s": round(end_to_end["rate"], 1),
        "baseline_airflow_smtplib_per_s": round(baseline["rate"], 1),
        "end_to_end_vs_limit": round(end_to_end["rate"] / bare["rate"], 3),
        "end_to_end_vs_baseline": round(end_to_end["rate"] / baseline["rate"], 2),
        "peak_memory_mb_by_volume": {str(volume): round(runs[volume]["peak_rss_mb"], 1) for volume in volumes},
        "rate_by_volume": {str(volume): round(runs[volume]["rate"], 1) for volume in volumes},
        "baseline_emails": baseline_count,
        "server_received": received,
        "server_received_expected": expected,
        "workspace": str(folder),
    }


def bench_letters(count: int, small_count: int) -> dict[str, Any]:
    folder = _workspace("letters")
    volumes = sorted({small_count, count})
    runs = {}
    for volume in volumes:
        env = _prepare(folder / f"wave-{volume}", volume, "letter")
        runs[volume] = _child("print", env)
    return {
        "letters": count,
        "letters_per_s": round(runs[count]["rate"], 1),
        "posting_per_s": round(runs[count]["posting_rate"], 1),
        "batches": runs[count]["batches"],
        "rate_by_volume": {str(volume): round(runs[volume]["rate"], 1) for volume in volumes},
        "peak_memory_mb_by_volume": {str(volume): round(runs[volume]["peak_rss_mb"], 1) for volume in volumes},
        "workspace": str(folder),
    }


# -- the measured parts, each in its own process --------------------------------------------------


def _bare(port: int, count: int, connections: int) -> dict[str, Any]:
    import aiosmtplib

    from enrolment.references import draw
    from notifications.render import DEFAULT_SENDER, Member, build_email, message_content

    settings = load_settings()
    member = Member("282080105300118", "Camille", "Martin")
    prebuilt = [
        build_email(
            message_content(str(uuid.UUID(int=i)), member.nir, member, [member], b"k" * 32, SEND_DATE,
                            settings.opt_out_window, reference=draw(str(uuid.UUID(int=i)))),
            f"personne.{i}@example.fr",
        )
        for i in range(1000)
    ]

    async def push() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(count):
            queue.put_nowait(index)

        async def worker() -> None:
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
            await smtp.connect()
            while not queue.empty():
                index = queue.get_nowait()
                await smtp.sendmail(DEFAULT_SENDER, [f"personne.{index % 1000}@example.fr"], prebuilt[index % 1000])
            await smtp.quit()

        await asyncio.gather(*(worker() for _ in range(connections)))

    started = time.perf_counter()
    asyncio.run(push())
    return {"sent": count, "rate": count / (time.perf_counter() - started), "peak_rss_mb": _peak_rss_mb()}


def _send(port: int, connections: int) -> dict[str, Any]:
    import dataclasses

    from mes_rollout.db import make_engine
    from notifications.email_client import SmtpTarget
    from notifications.sending import send_emails

    settings = dataclasses.replace(load_settings(), smtp_connections=connections)
    engine = make_engine(settings.database_url)
    started = time.perf_counter()
    summary = send_emails(
        engine, settings, SmtpTarget("127.0.0.1", port), logical_date=SEND_DATE, run_id="bench", shard=None
    )
    elapsed = time.perf_counter() - started
    return {"sent": summary.sent, "rate": summary.sent / elapsed, "peak_rss_mb": _peak_rss_mb()}


def _airflow_baseline(port: int, count: int) -> dict[str, Any]:
    os.environ.update(
        {
            "AIRFLOW__SMTP__SMTP_HOST": "127.0.0.1",
            "AIRFLOW__SMTP__SMTP_PORT": str(port),
            "AIRFLOW__SMTP__SMTP_STARTTLS": "False",
            "AIRFLOW__SMTP__SMTP_SSL": "False",
            "AIRFLOW__SMTP__SMTP_MAIL_FROM": "ne-pas-repondre@mes-rollout.invalid",
            "AIRFLOW__SMTP__SMTP_RETRY_LIMIT": "0",
        }
    )
    import logging

    from airflow.utils.email import send_email_smtp

    from enrolment.references import draw
    from notifications.render import SUBJECT, Member, message_content, render_html

    logging.getLogger("airflow.utils.email").setLevel(logging.WARNING)
    settings = load_settings()
    member = Member("282080105300118", "Camille", "Martin")
    html = render_html(
        message_content(str(uuid.UUID(int=1)), member.nir, member, [member], b"k" * 32, SEND_DATE,
                        settings.opt_out_window, reference=draw(str(uuid.UUID(int=1))))
    )
    started = time.perf_counter()
    for index in range(count):
        # conn_id=None: no credentials lookup per email, which only favours the baseline.
        send_email_smtp(f"personne.{index}@example.fr", SUBJECT, html, conn_id=None)  # type: ignore[arg-type]
    return {"sent": count, "rate": count / (time.perf_counter() - started), "peak_rss_mb": _peak_rss_mb()}


def _print() -> dict[str, Any]:
    from mes_rollout.db import make_engine
    from notifications.letters import post_printed_batches, print_letters

    settings = load_settings()
    engine = make_engine(settings.database_url)
    started = time.perf_counter()
    printed = print_letters(engine, settings, logical_date=SEND_DATE, run_id="bench")
    printing = time.perf_counter() - started
    started = time.perf_counter()
    post_printed_batches(engine, settings, logical_date=SEND_DATE, run_id="bench")
    posting = time.perf_counter() - started
    return {
        "printed": printed.letters_printed,
        "batches": len(printed.batches),
        "rate": printed.letters_printed / printing,
        "posting_rate": printed.letters_printed / posting,
        "peak_rss_mb": _peak_rss_mb(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one measured part of a notifications benchmark")
    parser.add_argument("mode", choices=("bare", "send", "airflow-baseline", "print"))
    parser.add_argument("--port", type=int)
    parser.add_argument("--count", type=int)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args(argv)
    if args.mode == "bare":
        result = _bare(args.port, args.count, args.connections)
    elif args.mode == "send":
        result = _send(args.port, args.connections)
    elif args.mode == "airflow-baseline":
        result = _airflow_baseline(args.port, args.count)
    else:
        result = _print()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
