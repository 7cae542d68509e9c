"""`smsbridge serve | worker | migrate | check-config | doctor | dead-letters | telegram |
webhook-url | prune | forget`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import signal
import socket
import sys
import textwrap
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, cast

import uvicorn
import yaml
from sqlalchemy.engine import make_url

from bridge import config as config_module
from bridge import logs, phones, runtime
from bridge.app import (
    Options,
    agent_inputs,
    background_work,
    create_app,
    delivery_parts,
    smstools_parts,
    webhook_url,
)
from bridge.config import Config, ConfigError
from bridge.delivery.worker import Worker, WorkerOptions
from bridge.http import head_deadline
from bridge.http.webhook import webhook_token
from bridge.jobs import Job
from bridge.ops import doctor, erasure, reprocess, retention, telegram_setup
from bridge.settings import Settings, SettingsError
from bridge.store import outbox as outbox_store
from bridge.store import wakeups as wakeups_store
from bridge.store.db import UNAVAILABLE, Database, describe_error
from bridge.store.migrations import SchemaTooNew, migrate

log = logging.getLogger("bridge")


def build_parser() -> argparse.ArgumentParser:
    """The command line; the deployment files' commands are checked against it."""
    parser = argparse.ArgumentParser(
        prog="smsbridge", description="Smstools SMS/WhatsApp webhooks to Slack and Telegram."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="web server (and the delivery worker)")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=None, help="default: $PORT, else 8000")
    serve.add_argument(
        "--no-worker", action="store_true", help="do not deliver in this process (BRIDGE_WORKER=0)"
    )
    _runtime_options(serve, http=True)
    _runtime_options(commands.add_parser("worker", help="the delivery worker alone"), http=False)
    commands.add_parser("migrate", help="create or upgrade the database schema")
    check = commands.add_parser("check-config", help="validate the config and show the routes")
    check.add_argument("path", nargs="?", type=Path, default=None)
    doctor_command = commands.add_parser(
        "doctor", help="check the live set-up: database, config, Slack, Telegram, Smstools"
    )
    doctor_command.add_argument(
        "--config", type=Path, default=None, help="default: $BRIDGE_CONFIG, else built-in"
    )
    dead = commands.add_parser("dead-letters", help="jobs that failed for good: list, retry")
    dead_commands = dead.add_subparsers(dest="action", required=True)
    dead_commands.add_parser("list", help="show each dead letter with its last error")
    retry = dead_commands.add_parser("retry", help="queue dead letters again")
    retry.add_argument("ids", nargs="*", type=int, metavar="ID", help="dead letters to retry")
    retry.add_argument("--all", action="store_true", help="retry every dead letter")
    commands.add_parser("webhook-url", help="the URL to paste into the Smstools dashboard")
    prune = commands.add_parser(
        "prune", help="remove what outlived its retention now (the worker does it hourly)"
    )
    prune.add_argument("--dry-run", action="store_true", help="only say what would go")
    reprocess_command = commands.add_parser(
        "reprocess", help="replay stored events not understood through today's parser"
    )
    reprocess_command.add_argument(
        "--since",
        type=_since,
        default=None,
        metavar="DATE",
        help="only events received since then: 2026-12-05 or '2026-12-05 09:00' (UTC unless "
        "it gives an offset); default: all",
    )
    reprocess_command.add_argument(
        "--dry-run", action="store_true", help="only say what would be replayed"
    )
    forget = commands.add_parser("forget", help="erase what is stored about one customer")
    forget.add_argument("number", help="in international format, e.g. '+32 470 12 34 56'")
    telegram = commands.add_parser("telegram", help="register where agents' messages go")
    telegram_commands = telegram.add_subparsers(dest="action", required=True)
    set_webhook = telegram_commands.add_parser("set-webhook", help="setWebhook with the secret")
    set_webhook.add_argument("--url", default=None, help="default: $BRIDGE_PUBLIC_URL + path")
    telegram_commands.add_parser("delete-webhook", help="deleteWebhook")
    return parser


def _runtime_options(command: argparse.ArgumentParser, *, http: bool) -> None:
    command.add_argument(
        "--loop", choices=runtime.LOOPS, default="auto", help="default: uvloop when installed"
    )
    if http:
        command.add_argument(
            "--http",
            choices=runtime.PARSERS,
            default="auto",
            help="uvicorn's HTTP parser; default: httptools when installed",
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status. A reader that stopped reading (`| head -3`) ends it
    quietly, as it does other command-line tools; any other failure to write the output is
    one line."""
    stdout, output = sys.stdout, _Output(sys.stdout)
    sys.stdout = cast(TextIO, output)
    try:
        code = _command(argv)
        sys.stdout.flush()  # here, where a failure is caught, not at the interpreter's exit
    except OSError as error:
        if not output.failed:
            raise
        _discard(stdout)
        if isinstance(error, BrokenPipeError):
            return 128 + signal.SIGPIPE  # what a shell shows for a tool its reader left
        print(f"smsbridge: cannot write the output: {_reason(error)}", file=sys.stderr)
        return 1
    finally:
        sys.stdout = stdout
    return code


class _Output:
    """stdout, remembering whether writing to it failed."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.failed = stream, False

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError:
            self.failed = True
            raise

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError:
            self.failed = True
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _output_failed() -> bool:
    return isinstance(sys.stdout, _Output) and sys.stdout.failed


def _discard(stdout: TextIO) -> None:
    """Point stdout at /dev/null: what it still buffers can go nowhere, and the interpreter's
    own flush at exit must not complain about it."""
    with contextlib.suppress(OSError, ValueError):  # no descriptor: nothing flushes at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stdout.fileno())
        os.close(devnull)


def _command(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if arguments.command == "dead-letters" and arguments.action == "retry":
        if bool(arguments.ids) == arguments.all:
            parser.error("dead-letters retry: give job IDs or --all (not both)")
    try:
        # A release phase runs `migrate` before anything else is set: it needs the database only.
        migrating = arguments.command == "migrate"
        settings = Settings.for_migrations() if migrating else Settings.from_env()
    except SettingsError as error:
        for problem in error.problems:
            print(f"smsbridge: environment: {problem}", file=sys.stderr)
        return 1
    # Every record is masked (phone numbers) and scrubbed (secrets) whatever logged it.
    logs.configure(
        settings.log_level, secrets=logs.secrets_in(settings.environ), form=settings.log_format
    )
    code = _without_config(arguments, settings)
    if code is not None:
        return code
    try:
        config = config_module.from_settings(settings)
        chosen = runtime.choose(
            getattr(arguments, "loop", "auto"), getattr(arguments, "http", "auto")
        )
    except ConfigError as error:
        _print_problems(error)
        return 1
    except runtime.Unavailable as error:
        print(f"smsbridge: {error}", file=sys.stderr)
        return 1
    return _with_config(arguments, settings, config, chosen)


def _without_config(arguments: argparse.Namespace, settings: Settings) -> int | None:
    """Run a command that needs no config (an operator must reach the dead letters, forget a
    number or migrate even with a broken config); None for the others."""
    if arguments.command == "migrate":
        return _with_database(settings, lambda: asyncio.run(run_migrate(settings)))
    if arguments.command == "check-config":
        return check_config(arguments.path, settings)
    if arguments.command == "doctor":
        return run_doctor(settings, arguments.config)
    if arguments.command == "webhook-url":
        return _with_database(settings, lambda: asyncio.run(show_webhook_url(settings)))
    if arguments.command == "forget":
        try:
            number = phones.parse(arguments.number)
        except ValueError as error:
            print(f"smsbridge: {error}; give it in international format", file=sys.stderr)
            return 1
        return _with_database(settings, lambda: asyncio.run(run_forget(settings, number)))
    if arguments.command == "dead-letters":
        ids = None if arguments.action == "list" or arguments.all else arguments.ids
        return _with_database(
            settings, lambda: asyncio.run(dead_letters(settings, arguments.action, ids))
        )
    return None


def _with_config(
    arguments: argparse.Namespace, settings: Settings, config: Config, chosen: runtime.Runtime
) -> int:
    """Run a command that works with the config, on the loop (and parser) `chosen`."""
    if arguments.command == "serve":
        return _serve(arguments, settings, config, chosen)
    if arguments.command == "worker":
        return _with_database(
            settings, lambda: runtime.run(run_worker(settings, config), chosen.loop)
        )
    if arguments.command == "prune":
        dry_run = arguments.dry_run
        return _with_database(settings, lambda: asyncio.run(run_prune(settings, config, dry_run)))
    if arguments.command == "reprocess":
        since, dry_run = arguments.since, arguments.dry_run
        return _with_database(
            settings, lambda: asyncio.run(run_reprocess(settings, config, since, dry_run))
        )
    if arguments.command == "telegram":
        return _telegram(arguments.action, getattr(arguments, "url", None), config, settings)
    raise AssertionError(f"unhandled command {arguments.command}")


def _serve(
    arguments: argparse.Namespace, settings: Settings, config: Config, chosen: runtime.Runtime
) -> int:
    """Migrate, take the port, then serve: a database problem or a port in use is one clear
    line, before anything is logged as serving."""
    code = _with_database(settings, lambda: asyncio.run(run_migrate(settings, quiet=True)))
    if code:
        return code
    host = arguments.host
    port = arguments.port if arguments.port is not None else settings.port
    try:
        listener = listen(host, port)
    except OSError as error:
        print(f"smsbridge: cannot listen on {host}:{port}: {_listen_error(error)}", file=sys.stderr)
        return 1
    with listener:
        no_worker = arguments.no_worker
        return _with_database(
            settings, lambda: serve_forever(settings, config, listener, no_worker, chosen)
        )


def _with_database(settings: Settings, command: Callable[[], int]) -> int:
    """Run a command that needs the database; say in one line why it cannot be used, or what
    else failed (a file, the network) when it was not the database."""
    try:
        return command()
    except SchemaTooNew as error:
        print(f"smsbridge: {error}", file=sys.stderr)
    except UNAVAILABLE as error:
        if isinstance(error, OSError) and not _raised_by_database(error):
            if _output_failed():
                raise  # the output, not the database (`main`)
            print(f"smsbridge: {_os_error(error)}", file=sys.stderr)
            return 1
        where = make_url(settings.database_url).render_as_string(hide_password=True)
        print(
            f"smsbridge: cannot use the database {where}: {describe_error(error)}", file=sys.stderr
        )
    return 1


# Where a database error is raised from: the drivers and SQLAlchemy. SQLAlchemy wraps what
# the drivers raise, except some of asyncpg's connection errors, which are plain OSErrors.
_DATABASE_PACKAGES = tuple(
    f"{os.sep}{package}{os.sep}" for package in ("sqlalchemy", "asyncpg", "aiosqlite")
)


def _raised_by_database(error: BaseException) -> bool:
    """Whether `error` was raised inside the database drivers, rather than by a file, stdout
    or a network call of the command itself."""
    return any(
        package in frame.filename
        for frame in traceback.extract_tb(error.__traceback__)
        for package in _DATABASE_PACKAGES
    )


def _os_error(error: OSError) -> str:
    """An operating system error in one line: what it happened to, when it says, and why."""
    if error.filename is not None:
        return f"cannot use {error.filename}: {_reason(error)}"
    return f"{type(error).__name__}: {_reason(error)}"


def _reason(error: OSError) -> str:
    return error.strerror or describe_error(error)


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to `host:port`, for uvicorn to listen on (as its own binding does:
    address reuse, inheritable by workers)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _listen_error(error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return "the port is in use (another process listens on it; choose one with --port or PORT)"
    if error.errno == errno.EACCES:
        return "not allowed (ports below 1024 need privileges)"
    return error.strerror or describe_error(error)


def check_config(path: Path | None, settings: Settings) -> int:
    """Validate the config (`path`, else the one the settings point at) and show what it
    means; exit 1 when it cannot be used or a destination's token variable is unset."""
    try:
        config = _load_config(path, settings)
    except ConfigError as error:
        _print_problems(error)
        return 1
    print(f"{config.source}: OK")
    if path is None and config.source == config_module.ENVIRONMENT_SOURCE:
        document = config_module.from_environment(settings.config_variables)
        print("built from the environment as:")
        print(textwrap.indent(yaml.safe_dump(document, sort_keys=False).rstrip(), "  "))
    print("destinations:")
    for name, destination in config.destinations.items():
        print(f"  {name}: {destination.describe()}")
    print("routes (first match wins):")
    for route in config.routes:
        print(f"  {route.describe()}")
    print(f"  otherwise → {', '.join(config.default) or 'stored and counted, not posted'}")
    print(f"threads: a conversation quiet for {config.idle_after:g}s starts a new thread")
    print(f"retention: {config.retention.describe()}")
    if config.alerts is not None:
        codes = ", ".join(str(code) for code in sorted(config.alerts.on_codes))
        print(f"alerts on delivery codes {codes} (first match wins):")
        for alert_route in config.alerts.routes:
            print(f"  {alert_route.describe()}")
    missing = config_module.missing_tokens(config, settings.environ)
    for name, variable in missing.items():
        advice = config_module.token_advice(config.destinations[name], variable)
        print(
            f"config error: {config.source}: destinations.{name}: {variable} is not set, so "
            f"its messages wait in the outbox → {advice}",
            file=sys.stderr,
        )
    return 1 if missing else 0


def _load_config(path: Path | None, settings: Settings) -> Config:
    """The config at `path` when one is given, else the one the settings point at."""
    if path is not None:
        return config_module.load(path, settings.environ)
    return config_module.from_settings(settings)


def run_doctor(settings: Settings, config_path: Path | None) -> int:
    """Print one line per check; exit 1 when any check found a problem."""
    findings = asyncio.run(doctor.diagnose(settings, config_path))
    # DATABASE_URL is shown with its password hidden; its whole value is no secret to blank.
    environ = settings.environ
    secrets = logs.secrets_in({k: v for k, v in environ.items() if k != "DATABASE_URL"})
    for finding in findings:
        line = finding.line()
        for secret in secrets:  # the checks never show one; this is the second lock
            line = line.replace(secret, logs.HIDDEN)
        print(line)
    problems = sum(finding.status is doctor.Status.PROBLEM for finding in findings)
    if problems:
        print(f"{problems} problem(s) found")
        return 1
    print("no problems found")
    return 0


def _print_problems(error: ConfigError) -> None:
    for problem in error.problems:
        print(f"config error: {problem}", file=sys.stderr)


def serve_forever(
    settings: Settings,
    config: Config,
    listener: socket.socket,
    no_worker: bool,
    chosen: runtime.Runtime,
) -> int:
    """Serve on `listener` until a signal; an error of the app's start-up or shutdown (the
    database's) is raised to the caller, not logged by uvicorn as a traceback."""
    host, port = listener.getsockname()[:2]
    settings = dataclasses.replace(settings, port=port)
    options = Options(run_worker=settings.run_worker and not no_worker, settle_heap=True)
    app = create_app(settings, config, options)
    server = _Server(
        uvicorn.Config(
            app,
            log_level="warning",
            # The app's start-up runs in `_Server`, so that its errors reach the caller.
            lifespan="off",
            loop=chosen.loop,
            # uvicorn's own handlers would bypass the privacy filter; request lines hold the
            # webhook token.
            log_config=None,
            access_log=False,
            # Bounds against slow or piling-up clients.
            http=head_deadline.protocol(settings.header_timeout, chosen.http),
            limit_concurrency=settings.max_connections,
            timeout_keep_alive=settings.keep_alive,
        ),
        app.router.lifespan_context(app),
        f"serving on {host}:{port} (worker {'on' if options.run_worker else 'off'}, "
        f"{chosen.describe()})",
    )
    server.run(sockets=[listener])
    return 0


class _Server(uvicorn.Server):
    """uvicorn's server running the app's `lifespan` itself, around its own start and stop
    (uvicorn would log a failed start-up as a traceback and exit 3), and saying `started`
    once it accepts connections."""

    def __init__(
        self, config: uvicorn.Config, lifespan: AbstractAsyncContextManager[object], started: str
    ) -> None:
        super().__init__(config)
        self.app_lifespan = lifespan
        self.started_line = started
        self._exit = contextlib.AsyncExitStack()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self._exit.enter_async_context(self.app_lifespan)
        try:
            await super().startup(sockets)
        except BaseException:
            await self._exit.aclose()
            raise
        if self.started:
            log.info("%s", self.started_line)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().shutdown(sockets)
        finally:
            await self._exit.aclose()


async def run_worker(settings: Settings, config: Config) -> int:
    # A worker alone serves no /metrics (the web process's scrape shows the database gauges).
    async with (
        delivery_parts(settings, config) as parts,
        smstools_parts(settings, config, parts.database, None, time.time) as (smstools, credit),
    ):
        worker = Worker(
            parts.database,
            config,
            parts.adapters,
            options=WorkerOptions(lease=settings.job_lease),
            smstools=smstools,
            supervisor=background_work(parts.database, config, credit),
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, lambda: asyncio.ensure_future(worker.stop()))
        log.info("worker %s delivering", worker.name)
        async with agent_inputs(settings, config, worker, time.time):
            await worker.run()
    return 0


def _telegram(action: str, url: str | None, config: Config, settings: Settings) -> int:
    if action == "set-webhook" and settings.telegram_updates == "polling":
        print(
            "smsbridge: TELEGRAM_UPDATES is polling (the default when neither "
            "TELEGRAM_WEBHOOK_SECRET nor BRIDGE_PUBLIC_URL is set), and the bridge's poller "
            "deletes a webhook; set TELEGRAM_UPDATES=webhook to use one",
            file=sys.stderr,
        )
        return 1
    if action == "set-webhook":
        return _with_database(
            settings, lambda: _answered(asyncio.run(_set_webhook(config, settings, url)))
        )
    return _answered(asyncio.run(telegram_setup.delete_webhook(config, settings)))


async def _set_webhook(config: Config, settings: Settings, url: str | None) -> list[str]:
    """`telegram set-webhook` with TELEGRAM_WEBHOOK_SECRET, or the one the bridge generated
    (generating it if no process has yet)."""
    database = Database(settings.database_url)
    try:
        if settings.telegram_webhook_secret is None:
            await migrate(database)
        secret = await telegram_setup.webhook_secret(database, settings)
    finally:
        await database.close()
    return await telegram_setup.set_webhook(config, settings, url, secret)


def _answered(lines: list[str]) -> int:
    for line in lines:
        print(line)
    return 0 if all("answered ok" in line for line in lines) else 1


async def dead_letters(settings: Settings, action: str, ids: list[int] | None) -> int:
    """List dead letters, or queue them again (all of them when `ids` is None)."""
    database = Database(settings.database_url)
    try:
        await migrate(database)
        async with database.transaction() as connection:
            if action == "list":
                total = await outbox_store.dead_count(connection)
                return _list_dead_letters(await outbox_store.dead(connection), total)
            now, missing = time.time(), []
            if ids is None:
                count = await outbox_store.requeue(connection, None, now)
            else:
                count = 0
                for job_id in ids:
                    queued = await outbox_store.requeue(connection, [job_id], now)
                    count += queued
                    if not queued:
                        missing.append(job_id)
            if count:
                await wakeups_store.announce(database, connection)
    finally:
        await database.close()
    for job_id in missing:
        print(f"smsbridge: job {job_id} is not a dead letter", file=sys.stderr)
    print(f"{count} dead letter(s) queued again; a running worker delivers them shortly")
    return 1 if missing else 0


def _list_dead_letters(jobs: Sequence[Job], total: int) -> int:
    if not jobs:
        print("no dead letters")
        return 0
    for job in jobs:
        queued = datetime.fromtimestamp(job.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        print(
            f"{job.id}\t{job.destination}\t{job.kind}\tqueued {queued}\t"
            f"{job.attempts} attempt(s)\t{job.last_error or 'no error recorded'}"
        )
    shown = f"the first {len(jobs)} of {total}" if total > len(jobs) else f"{total}"
    print(f"{shown} dead letter(s); retry with: smsbridge dead-letters retry ID... | --all")
    return 0


async def show_webhook_url(settings: Settings) -> int:
    """Print the webhook URL (generating the token if no process has yet)."""
    database = Database(settings.database_url)
    try:
        await migrate(database)
        token, _ = await webhook_token(database, settings)
    finally:
        await database.close()
    print(webhook_url(settings, token))
    return 0


async def run_prune(settings: Settings, config: Config, dry_run: bool) -> int:
    """What the worker does hourly, now, and the old copies overwritten on disk after it
    (exit 1 when that could not finish); `dry_run` only counts."""
    database = Database(settings.database_url)
    try:
        await migrate(database)
        pruned = await retention.prune(database, config, time.time(), dry_run=dry_run, scrub=True)
    finally:
        await database.close()
    print(f"retention: {config.retention.describe()}")
    for line in pruned.lines(dry_run):
        print(line)
    return 1 if pruned.disk is not None and not pruned.disk.done else 0


def _since(value: str) -> float:
    """A `--since` date as a Unix time: ISO 8601, UTC unless it gives an offset."""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a date: give 2026-12-05 or '2026-12-05 09:00'"
        ) from None
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()


async def run_reprocess(
    settings: Settings, config: Config, since: float | None, dry_run: bool
) -> int:
    """Replay the events not understood; print a line per event and a total."""
    database = Database(settings.database_url)
    try:
        await migrate(database)
        replayed = await reprocess.reprocess(database, config, since, time.time(), dry_run=dry_run)
    finally:
        await database.close()
    for line in replayed.lines(dry_run):
        print(line)
    return 0


async def run_forget(settings: Settings, number: str) -> int:
    """Erase the customer; exit 1 when the old copies on disk could not be overwritten yet."""
    database = Database(settings.database_url)
    try:
        await migrate(database)
        erased = await erasure.forget(database, number, time.time())
    finally:
        await database.close()
    for line in erased.lines():
        print(line)
    return 1 if erased.disk is not None and not erased.disk.done else 0


async def run_migrate(settings: Settings, *, quiet: bool = False) -> int:
    # DDL on a session of its own, as platforms with a pooler advise, when one is given.
    database = Database(settings.database_direct_url or settings.database_url)
    try:
        before, after = await migrate(database)
    finally:
        await database.close()
    if not quiet:
        changed = f" (was {before})" if before != after else ""
        print(f"database schema at version {after}{changed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
