"""The ``vesalius`` command: serve, import, reindex, db, doctor, config, conformance."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from vesalius import __version__
from vesalius.cli import federation as federation_cli
from vesalius.cli import jobs as jobs_cli
from vesalius.cli import mirror as mirror_cli
from vesalius.cli import records as records_cli
from vesalius.cli import users as users_cli
from vesalius.config import ConfigError, Settings, load_settings, unknown_environment

app = typer.Typer(
    name="vesalius",
    help=(
        "Vesalius, a research PACS: a DICOM archive (DIMSE and DICOMweb) that keeps each "
        "subject's research record beside the images.\n\n"
        "Settings come from a TOML file (--config or VESALIUS_CONFIG) and VESALIUS_* "
        "environment variables; `vesalius config show` prints them."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)
db_app = typer.Typer(help="Manage the index database.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
app.add_typer(records_cli.app, name="records")
app.add_typer(users_cli.app, name="user")
app.add_typer(jobs_cli.app, name="jobs")
app.add_typer(federation_cli.central_app, name="central")
app.add_typer(federation_cli.indexer_app, name="indexer")
app.add_typer(mirror_cli.mirror_app, name="mirror")

err = Console(stderr=True)
out = Console()

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML configuration file (default: $VESALIUS_CONFIG).",
        show_default=False,
    ),
]


def settings_or_exit(config: Path | None) -> Settings:
    for name in unknown_environment():
        err.print(f"[yellow]Note:[/yellow] {name} is not a Vesalius setting and is ignored.")
    notes: list[str] = []
    try:
        settings = load_settings(config, notes=notes)
    except ConfigError as exc:
        err.print(f"[red]Configuration error:[/red] {exc}")
        raise typer.Exit(2) from None
    for note in notes:
        err.print(f"[yellow]Note:[/yellow] {escape(note)}")
    return settings


def _version(value: bool) -> None:
    if value:
        out.print(f"vesalius {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    pass


@app.command()
def serve(config: ConfigOption = None) -> None:
    """Run the archive: DICOM (C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE) and HTTP, until stopped.

    The embedded SQLite index is created and migrated on first start. Stop with Ctrl-C or
    SIGTERM: associations in progress finish, then the process exits.
    """
    from vesalius.cli.serve import run

    settings = settings_or_exit(config)
    if config is not None:
        os.environ["VESALIUS_CONFIG"] = str(config.resolve())  # for worker processes
    run(settings)


@app.command("import")
def import_(
    paths: Annotated[
        list[Path], typer.Argument(help="Files, folders (searched recursively) or zip files.")
    ],
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Also write every file with its outcome (stored, duplicate, rejected) and "
            "reason to this CSV file.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Store DICOM files into the archive, as if they had been sent to it.

    Prints a summary of stored, duplicate and rejected files, with the reason for each
    rejection. Exits with status 1 when a file was rejected.
    """
    from vesalius.cli.importer import run_import

    code = run_import(settings_or_exit(config), paths, out, report)
    raise typer.Exit(code)


@app.command()
def reindex(
    config: ConfigOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Rebuild the whole index from the stored files alone (stop the server first)."""
    from vesalius.cli.maintenance import run_reindex

    settings = settings_or_exit(config)
    if not yes and sys.stdin.isatty():
        typer.confirm(
            "This replaces the imaging index with one rebuilt from the files. Go on?", abort=True
        )
    raise typer.Exit(run_reindex(settings, out))


@app.command()
def doctor(
    config: ConfigOption = None,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Remove stale temporary files; index the orphan stored files that can be "
            "indexed and remove the others.",
        ),
    ] = False,
    min_age: Annotated[
        float,
        typer.Option(
            "--min-age",
            metavar="SECONDS",
            help="Leave orphan files younger than this alone (a store may be in progress); "
            "0 when the server is stopped.",
        ),
    ] = 600.0,
) -> None:
    """Check the database, the storage folder, the ports and the versions, and say what is wrong.

    Also lists the files interrupted stores left behind: temporary files no process is
    writing, and stored files the index does not reference (orphans).
    """
    from vesalius.cli.doctor import run_doctor

    raise typer.Exit(run_doctor(settings_or_exit(config), out, fix=repair, min_age=min_age))


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Create or migrate the index schema to this version of Vesalius."""
    from vesalius.index.engine import Database
    from vesalius.index.migrate import current_revision, upgrade

    settings = settings_or_exit(config)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.effective_database_url)
    try:
        before = current_revision(db.engine)
        upgrade(db.engine)
        after = current_revision(db.engine)
    except Exception as exc:
        err.print(f"[red]Could not upgrade the database:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        db.dispose()
    if before == after:
        out.print(f"The database is up to date (revision {after}).")
    else:
        out.print(f"Upgraded the database from {before or 'empty'} to {after}.")


@config_app.command("show")
def config_show(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the effective settings (file, then environment), passwords masked."""
    settings = settings_or_exit(config)
    data = settings.masked()
    if as_json:
        out.print_json(json.dumps(data))
        return
    rows = [
        (name, f"VESALIUS_{name.upper()}", json.dumps(data[name]), field.description or "")
        for name, field in Settings.model_fields.items()
    ]
    longest = max(len(name) for name, *_ in rows) + max(len(var) for _, var, *_ in rows)
    if out.width >= longest + 70:
        from rich.table import Table

        table = Table("setting", "environment variable", "value", "meaning")
        for column in table.columns[:2]:
            column.no_wrap = True  # names are never cut nor wrapped
            column.overflow = "ignore"
        table.columns[2].overflow = "fold"
        for row in rows:
            table.add_row(*row)
        out.print(table)
        return
    # A narrow terminal (or a pipe): one block per setting, names whole on their own line.
    for name, variable, value, meaning in rows:
        out.print(f"[bold]{name}[/bold]  {variable}", soft_wrap=True, highlight=False)
        out.print(f"  = {value}", soft_wrap=True, highlight=False, markup=False)
        if meaning:
            out.print(meaning, style="dim", highlight=False, markup=False)
        out.print()


@app.command()
def conformance(
    config: ConfigOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of Markdown.")
    ] = False,
) -> None:
    """Print the DICOM conformance statement for these settings (docs/conformance.md is the
    default settings' one), generated from the tables the server runs on."""
    from vesalius.conformance import markdown, statement

    data = statement(settings_or_exit(config))
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(markdown(data))


def _add_plugin_commands() -> None:
    """``vesalius <plugin> ...`` for plugins that bring a ``cli`` (found from the environment
    and VESALIUS_CONFIG; a broken configuration is reported by the command itself)."""
    from vesalius.plugins import cli_apps

    try:
        settings = load_settings()
    except ConfigError:
        return
    taken = {group.name for group in app.registered_groups} | {
        command.name or (command.callback.__name__ if command.callback else "")
        for command in app.registered_commands
    }
    for name, plugin_app in cli_apps(settings):
        if name in taken:
            continue
        app.add_typer(plugin_app, name=name, help=f"Commands of the plugin {name}.")


def main() -> None:
    from vesalius.plugins import PluginError

    _add_plugin_commands()
    try:
        app()
    except PluginError as exc:
        err.print(f"[red]{exc}[/red]")
        raise SystemExit(1) from None
