"""`erv`: run the service and look after its accounts.

    erv run [--demo]            serve HTTPS (dev certificate made if missing)
    erv add-user NAME ROLE      add a staff account (password asked for, or ERV_NEW_PASSWORD)
    erv set-password NAME       change a password (ends every sign-in of the account)
    erv disable-user NAME       disable an account and end its sign-ins and sockets
    erv enable-user NAME        enable a disabled account
    erv unlock NAME             clear an account's sign-in throttle
    erv demo-accounts           create the demo handler, specialist, supervisor and auditor
    erv verify-record           check the case record's hash chain; exit 1 naming the break
    erv rotate-key              add a new master key; new records use it, old ones stay readable
    erv export SESSION --out DIR --by AUDITOR   write a signed bundle of a session's record
    erv verify-export DIR [--public-key PEM]    check a bundle's signature and hashes
    erv hold SESSION --reason TEXT   put a session on legal hold (purge keeps it)
    erv release SESSION              lift a legal hold
    erv purge [--now TIMESTAMP]      crypto-shred sessions idle past ERV_RETENTION_DAYS
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import logging
import os
import secrets
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from aiohttp import web

from server import log_redaction
from server.accounts import AccountError, StaffRole
from server.app import create_app
from server.config import Config, ConfigError
from server.process_hardening import disable_core_dumps, private_data_dir
from server.record import CaseRecordStore, rotate_key_file
from server.record.export import ExportError, ExportResult, export_session, verify_export
from server.record.retention import PurgeResult, RetentionError, RetentionStore
from server.redis_link import StoreUnavailable
from server.serving import serve
from server.sms.console import exposure_warning
from server.stores import Stores, stores_for
from server.tls import ensure_dev_certificate, server_ssl_context

log = logging.getLogger("erv")
GC_YOUNG_THRESHOLD = 10_000  # allocations between young collections (Python's default: 700)
T = TypeVar("T")

DEMO_ACCOUNTS = (
    ("handler", "Demo Handler", StaffRole.HANDLER),
    ("specialist", "Demo Specialist", StaffRole.SPECIALIST),
    ("supervisor", "Demo Supervisor", StaffRole.SUPERVISOR),
    ("auditor", "Demo Auditor", StaffRole.AUDITOR),
)


async def demo_accounts(config: Config) -> list[tuple[str, str]]:
    """Create missing demo accounts; returns (username, password) for the new ones."""
    async with stores_for(config) as stores:
        created = []
        for username, name, role in DEMO_ACCOUNTS:
            if await stores.accounts.exists(username):
                continue
            password = config.demo_password or secrets.token_urlsafe(12)
            await stores.accounts.add(username, name, role, password)
            created.append((username, password))
        return created


async def _add_user(config: Config, username: str, name: str, role: str, password: str) -> None:
    async with stores_for(config) as stores:
        await stores.accounts.add(username, name, role, password)


async def _set_password(config: Config, username: str, password: str) -> None:
    async with stores_for(config) as stores:
        await stores.accounts.set_password(username, password)


async def _set_disabled(config: Config, username: str, disabled: bool) -> None:
    async with stores_for(config) as stores:
        await stores.accounts.set_disabled(username, disabled)


async def _unlock(config: Config, username: str) -> None:
    async with stores_for(config) as stores:
        await stores.accounts.unlock(username)


async def _with_record(config: Config, command: Callable[[Stores], Awaitable[T]]) -> T:
    """Run one record command on the configured backend's stores, then close them."""
    async with stores_for(config) as stores:
        return await command(stores)


async def _verify_record(record: CaseRecordStore) -> int:
    result = await record.verify()
    print(result.describe())
    for brk in result.breaks[1:]:
        print(f"  also: {brk}")
    return 0 if result.ok else 1


async def _export(stores: Stores, config: Config, session: str, by: str,
                  out: Path) -> ExportResult:
    return await export_session(stores.record, stores.accounts, config, session, by, out)


async def _hold(retention: RetentionStore, session: str, reason: str) -> None:
    await retention.hold(session, reason)


async def _release(retention: RetentionStore, session: str) -> bool:
    return await retention.release(session)


async def _purge(retention: RetentionStore, retention_days: int,
                 now: float | None) -> PurgeResult:
    return await retention.purge(retention_days, now)


def _timestamp(text: str) -> float:
    """Unix seconds, or an ISO 8601 time (UTC if it names no zone)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _ask_password() -> str:
    from_env = os.environ.get("ERV_NEW_PASSWORD", "")
    if from_env:
        return from_env
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Again: "):
        raise AccountError("The two passwords differ.")
    return first


def run(config: Config, demo: bool) -> None:
    # Before any key is loaded: no core file, no reading this process's memory.
    disable_core_dumps()
    private_data_dir(config.data_dir)
    refusal = exposure_warning(config.public_url) if config.sms_gateway == "console" else None
    if refusal and not config.sms_console_public:
        raise ConfigError(refusal)
    if demo:
        for username, password in asyncio.run(demo_accounts(config)):
            print(f"demo account  {username:<11} password: {password}", flush=True)
    ssl_context = None
    if config.tls:
        if ensure_dev_certificate(config.tls_cert, config.tls_key):
            log.warning("made a self-signed development certificate in %s", config.tls_cert)
        ssl_context = server_ssl_context(config.tls_cert, config.tls_key)
    print(f"serving {config.public_url}", flush=True)
    app = create_app(config)
    app.on_startup.append(_settle_garbage_collector)
    serve(app, config, ssl_context, _event_loop())


async def _settle_garbage_collector(app: web.Application) -> None:
    """Once everything is open: what start-up made lives as long as the process, so the
    collector stops walking it (gc.freeze), and young collections run less often; a busy
    relay makes many short-lived objects and, unfrozen, full collections stall every socket."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (it is a dependency on Linux): less CPU per message."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="erv", description="Emergency video companion")
    commands = parser.add_subparsers(dest="command", required=True)
    run_cmd = commands.add_parser("run", help="serve the service")
    run_cmd.add_argument("--demo", action="store_true", help="create demo accounts first")
    add = commands.add_parser("add-user", help="add a staff account")
    add.add_argument("username")
    add.add_argument("role", choices=[r.value for r in StaffRole])
    add.add_argument("--name", default="", help="display name")
    setpw = commands.add_parser("set-password", help="change a staff password")
    setpw.add_argument("username")
    for name, text in (("disable-user", "disable an account and end its sign-ins"),
                       ("enable-user", "enable a disabled account"),
                       ("unlock", "clear an account's sign-in throttle")):
        commands.add_parser(name, help=text).add_argument("username")
    commands.add_parser("demo-accounts", help="create the demo staff accounts")
    commands.add_parser("verify-record", help="verify the case record's hash chain")
    commands.add_parser("rotate-key", help="add a new case-record master key")
    export = commands.add_parser("export", help="write a signed bundle of a session's record")
    export.add_argument("session")
    export.add_argument("--out", required=True, type=Path, help="new or empty folder")
    export.add_argument("--by", required=True, help="the auditor account making the export")
    check = commands.add_parser("verify-export", help="check a signed export bundle")
    check.add_argument("bundle", type=Path)
    check.add_argument("--public-key", type=Path, help="the service's signer.pub to trust")
    hold = commands.add_parser("hold", help="put a session on legal hold")
    hold.add_argument("session")
    hold.add_argument("--reason", required=True)
    release = commands.add_parser("release", help="lift a session's legal hold")
    release.add_argument("session")
    purge = commands.add_parser("purge", help="crypto-shred sessions past retention")
    purge.add_argument("--now", type=_timestamp, default=None,
                       help="judge age as of this time (unix seconds or ISO 8601)")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=os.environ.get("ERV_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    log_redaction.install()  # every handler of the root logger, so every logger's lines
    try:
        config = Config.from_env()
        if args.command == "run":
            run(config, args.demo)
        elif args.command == "add-user":
            asyncio.run(_add_user(config, args.username, args.name or args.username, args.role,
                                  _ask_password()))
            print(f"added {args.username} ({args.role})")
        elif args.command == "set-password":
            asyncio.run(_set_password(config, args.username, _ask_password()))
            print(f"password changed for {args.username}; every sign-in of it has ended")
        elif args.command in ("disable-user", "enable-user"):
            disable = args.command == "disable-user"
            asyncio.run(_set_disabled(config, args.username, disable))
            print(f"{args.username} disabled; every sign-in of it has ended" if disable
                  else f"{args.username} enabled")
        elif args.command == "unlock":
            asyncio.run(_unlock(config, args.username))
            print(f"sign-in throttle cleared for {args.username}")
        elif args.command == "verify-record":
            return asyncio.run(_with_record(config, lambda b: _verify_record(b.record)))
        elif args.command == "rotate-key":
            if os.environ.get("ERV_RECORD_KEYS"):
                raise ConfigError("keys come from ERV_RECORD_KEYS: rotate them where they live")
            key_id = rotate_key_file(config.record_keys_path)
            print(f"new master key {key_id}: new records use it, older ones stay readable")
        elif args.command == "export":
            result = asyncio.run(_with_record(
                config, lambda b: _export(b, config, args.session, args.by, args.out)))
            print(f"exported {result.events} events of session {args.session} to {result.out_dir}")
            print(f"signed by {result.fingerprint}; public key (also in signer.pub):")
            print(result.public_key_pem, end="")
        elif args.command == "verify-export":
            try:
                pem = args.public_key.read_bytes() if args.public_key else None
            except OSError as exc:
                raise ConfigError(f"--public-key: cannot read {args.public_key}: "
                                  f"{exc.strerror}") from exc
            outcome = verify_export(args.bundle, pem)
            print(outcome.describe())
            if outcome.ok and pem is None:
                print("checked against the bundle's own signer.pub: compare that fingerprint "
                      "with the service's, or pass --public-key")
            return 0 if outcome.ok else 1
        elif args.command == "hold":
            asyncio.run(_with_record(
                config, lambda b: _hold(b.retention, args.session, args.reason)))
            print(f"session {args.session} is on legal hold: purge will keep it")
        elif args.command == "release":
            if not asyncio.run(_with_record(config,
                                            lambda b: _release(b.retention, args.session))):
                raise RetentionError(f"session {args.session} is not on legal hold")
            print(f"legal hold on session {args.session} lifted")
        elif args.command == "purge":
            purged = asyncio.run(_with_record(
                config, lambda b: _purge(b.retention, config.retention_days, args.now)))
            print(f"purged {purged.purged} sessions older than {config.retention_days} days;"
                  f" {purged.held} kept on legal hold")
        elif args.command == "demo-accounts":
            for username, password in asyncio.run(demo_accounts(config)):
                print(f"demo account  {username:<11} password: {password}")
    except (ConfigError, AccountError, ExportError, RetentionError, StoreUnavailable) as exc:
        print(f"erv: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
