"""``vesalius user add|list|passwd|disable|enable|token``: accounts from the command line."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vesalius.auth.passwords import PasswordPolicyError, generate_password
from vesalius.auth.permissions import DEFAULT_ROLE, Role
from vesalius.container import Container
from vesalius.errors import Conflict, NotFound

app = typer.Typer(help="Manage portal accounts and API tokens.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML configuration file.", show_default=False),
]


@contextmanager
def _container(config: Path | None) -> Iterator[Container]:
    from vesalius.cli.main import settings_or_exit
    from vesalius.cli.serve import open_container

    container = open_container(settings_or_exit(config))
    try:
        yield container
    except (PasswordPolicyError, ValueError, Conflict, NotFound) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        container.close()


def _password(use_stdin: bool, generate: bool) -> tuple[str, bool]:
    """The new password, and whether it was generated (then it is printed once).

    From standard input with ``--password-stdin`` (one line), generated with
    ``--generate-password`` or when there is no terminal to ask at, else asked twice.
    """
    if use_stdin:
        line = sys.stdin.readline()
        if not line.strip():
            err.print("[red]--password-stdin: standard input holds no password line.[/red]")
            raise typer.Exit(1)
        return line.rstrip("\r\n"), False
    if generate or not sys.stdin.isatty():
        return generate_password(), True
    first = getpass.getpass("New password: ")
    if first != getpass.getpass("Again: "):
        err.print("[red]The two passwords differ.[/red]")
        raise typer.Exit(1)
    return first, False


def _show_generated(username: str, password: str) -> None:
    err.print(f"Generated password of {username} (shown this once, store it now):")
    out.print(password, soft_wrap=True, highlight=False)


StdinOption = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from the first line of standard input (for scripts).",
    ),
]
GenerateOption = Annotated[
    bool,
    typer.Option(
        "--generate-password",
        help=(
            "Generate a strong password and print it once (the default when there is no "
            "terminal to ask at)."
        ),
    ),
]


@app.command("add")
def add(
    username: str,
    role: Annotated[
        Role,
        typer.Option("--role", "-r", help="The account's role (default: the least privileged)."),
    ] = DEFAULT_ROLE,
    full_name: Annotated[str | None, typer.Option("--name", help="Full name.")] = None,
    password_stdin: StdinOption = False,
    generate: GenerateOption = False,
    config: ConfigOption = None,
) -> None:
    """Create an account.

    The password is asked twice at a terminal; in a script, pipe it with --password-stdin
    (echo "$PW" | vesalius user add alice --password-stdin), or let Vesalius generate one and
    print it once.
    """
    password, generated = _password(password_stdin, generate)
    with _container(config) as container:
        container.auth.create_user(username, password, role, full_name)
    err.print(f"Created {username} ({role.value}).")
    if generated:
        _show_generated(username, password)


@app.command("list")
def list_(config: ConfigOption = None) -> None:
    """List accounts."""
    with _container(config) as container:
        users = container.auth.users()
    table = Table("user", "name", "role", "state", "last login")
    for u in users:
        table.add_row(
            u.username,
            u.full_name or "",
            u.role,
            "active" if u.active else "disabled",
            str(u.last_login_at or "never"),
        )
    out.print(table)


@app.command("passwd")
def passwd(
    username: str,
    password_stdin: StdinOption = False,
    generate: GenerateOption = False,
    config: ConfigOption = None,
) -> None:
    """Set an account's password (its sessions end)."""
    password, generated = _password(password_stdin, generate)
    with _container(config) as container:
        container.auth.set_password(username, password)
    err.print(f"Password of {username} changed.")
    if generated:
        _show_generated(username, password)


@app.command("disable")
def disable(username: str, config: ConfigOption = None) -> None:
    """Disable an account: it can no longer log in, its sessions end, its tokens stop."""
    with _container(config) as container:
        container.auth.set_active(username, False)
    out.print(f"{username} is disabled.")


@app.command("enable")
def enable(username: str, config: ConfigOption = None) -> None:
    """Enable a disabled account again."""
    with _container(config) as container:
        container.auth.set_active(username, True)
    out.print(f"{username} is enabled.")


@app.command("token")
def token(
    username: str,
    name: Annotated[str, typer.Option("--name", help="What the token is for.")] = "cli",
    config: ConfigOption = None,
) -> None:
    """Create an API token for an account and print it (shown this once)."""
    with _container(config) as container:
        secret, _record = container.auth.create_token(username, name)
    out.print(secret, soft_wrap=True)
