"""The ``fastsmtp`` command (also ``python -m fastsmtp``).

``fastsmtp serve`` takes one flag per ``Settings`` field, derived from the
dataclass: values come from the defaults, then ``--config FILE`` (TOML),
then the flags given. ``fastsmtp settings`` prints the reference table.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from . import _logs
from ._version import __version__
from .config import ConfigError, Settings, load_toml, setting_fields

__all__ = ["main"]


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting; defaults stay None so only given flags override."""
    types = {f.name: str(f.type) for f in fields(Settings)}
    for name, flag, default, help_text in setting_fields():
        kind = types[name]
        shown = f"{help_text} (default: {default})"
        if kind == "bool":
            parser.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        elif kind.startswith("tuple"):
            parser.add_argument(
                flag, dest=name, action="append", default=None, metavar="VALUE", help=shown
            )
        else:
            convert: Any = {"int": int, "float": float}.get(kind, str)
            parser.add_argument(flag, dest=name, type=convert, default=None, help=shown)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every ``fastsmtp`` command."""
    parser = argparse.ArgumentParser(
        prog="fastsmtp", description="fastsmtp: an SMTP engine for Python."
    )
    parser.add_argument("--version", action="version", version=f"fastsmtp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run an SMTP server",
        description="Run an SMTP server until SIGINT or SIGTERM. Choose where mail goes "
        "with --maildir DIR, --mbox FILE, --sink or --print.",
    )
    serve.add_argument("--config", metavar="FILE", help="read settings from a TOML file first")
    _add_setting_flags(serve)

    passwd = commands.add_parser(
        "passwd",
        help="add or replace an AUTH user in an auth file",
        description="Read the password from standard input (one line) and write USER's "
        "argon2 hash and SCRAM-SHA-256 secrets into FILE, replacing the file atomically "
        "with mode 0600. Serve it with --auth-file FILE.",
    )
    passwd.add_argument("--auth-file", required=True, metavar="FILE", help="the auth file")
    passwd.add_argument("user", metavar="USER", help="the user name to add or replace")

    commands.add_parser(
        "settings",
        help="list every setting with its TOML key, CLI flag and default",
        description="Print the settings reference as a Markdown table.",
    )
    from .delivery import admin

    admin.add_parser(commands)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Defaults, then the TOML file, then the flags given on the command line."""
    base = load_toml(args.config) if args.config else Settings()
    given = {
        f.name: getattr(args, f.name) for f in fields(Settings) if getattr(args, f.name) is not None
    }
    return Settings.from_mapping(given, base) if given else base


def settings_table() -> str:
    """The settings reference, generated from the dataclass."""
    rows = ["| setting (keyword, TOML key) | CLI flag | default | meaning |", "|---|---|---|---|"]
    for name, flag, default, help_text in setting_fields():
        rows.append(f"| `{name}` | `{flag}` | `{default!r}` | {help_text} |")
    return "\n".join(rows)


def _serve(args: argparse.Namespace) -> int:
    from .server import Server, run_until_signal

    settings = settings_from_args(args)
    _logs.configure(settings.log_level)
    if settings.handler_name() is None:
        raise ConfigError(
            "choose where mail goes: --maildir DIR, --mbox FILE, --sink or --print, or a "
            "gateway: --lmtp-forward TARGET, --webhook URL or --pipe COMMAND"
        )
    if settings.workers > 1:
        from .workers import run_workers

        run_workers(settings)
    else:
        run_until_signal(Server(settings=settings))
    return 0


def _passwd(args: argparse.Namespace) -> int:
    from .auth import set_password

    if sys.stdin.isatty():
        password = getpass.getpass(f"Password for {args.user}: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    set_password(args.auth_file, args.user, password)
    print(f"fastsmtp: {args.user} written to {args.auth_file}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastsmtp`` command."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "passwd":
            return _passwd(args)
        if args.command == "queue":
            from .delivery import admin

            return admin.run(args)
        print(settings_table())
        return 0
    except ConfigError as exc:
        print(f"fastsmtp: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a port in use, a permission denied
        print(f"fastsmtp: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
