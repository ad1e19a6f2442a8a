"""``vesalius mirror ...``: remote PACS ([[remote_pacs]]) listed in the worklist."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vesalius.cli.federation import _container

mirror_app = typer.Typer(
    help=(
        "Mirror remote PACS (\\[\\[remote_pacs]] tables) into the worklist: their patients, "
        "studies and series are listed beside this archive's own, marked with their source, "
        "and a study is fetched into the archive when it is opened. `serve` syncs every "
        "mirror_interval_s seconds by itself."
    ),
    no_args_is_help=True,
)

out = Console()
err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML configuration file.", show_default=False),
]


SYNC_HELP = (
    "Copy the patients, studies and series of a remote PACS into the worklist.\n\n"
    "The first sync lists everything; later ones list only the studies dated from the "
    "watermark on (the day before the last sync began), and a full sync runs again once a "
    "day (or with --full). Each batch of studies is one transaction and the watermark moves "
    "only after the last one, so a sync that fails is simply run again.\n\n"
    "Exit status 1 when a remote could not be listed."
)


@mirror_app.command("sync", help=SYNC_HELP)
def sync(
    name: Annotated[
        str | None,
        typer.Argument(help="The remote PACS's name; every \\[\\[remote_pacs]] when left out."),
    ] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help=(
                "List every study of the remote, not only those dated from the watermark on "
                "(also catches old studies sent late and studies deleted there)."
            ),
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Copy the patients, studies and series of a remote PACS into the worklist."""
    from vesalius.federation.mirror import MirrorError
    from vesalius.logs import setup_logging

    with _container(config) as container:
        setup_logging(container.settings.log_level, plain=True)
        mirror = container.mirror
        assert mirror is not None
        names = [name] if name else [p.name for p in container.settings.remote_pacs]
        if not names:
            err.print(
                "[red]No \\[\\[remote_pacs]] configured:[/red] declare one in the configuration "
                "file or VESALIUS_REMOTE_PACS."
            )
            raise typer.Exit(1)
        failed = False
        for each in names:
            try:
                with err.status(f"Syncing {each}…"):
                    result = mirror.sync(each, full=full)
            except MirrorError as exc:
                err.print(f"[red]Sync of {each} failed:[/red] {exc}")
                failed = True
                continue
            kind = "full" if result.full else "incremental"
            out.print(
                f"{each}: {kind} sync, {result.listed} studies listed, {result.written} "
                f"written, {result.removed} removed in {result.seconds:.1f} s; watermark "
                f"{result.watermark}."
            )
    if failed:
        raise typer.Exit(1)


@mirror_app.command("status")
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Show each remote PACS's mirrored studies, watermark, last success and last error."""
    import json

    with _container(config) as container:
        mirror = container.mirror
        assert mirror is not None
        states = [mirror.status(p.name) for p in container.settings.remote_pacs]

    def when(value: object) -> str | None:
        return value.isoformat(sep=" ", timespec="seconds") if value else None  # type: ignore[attr-defined]

    rows = [
        {
            "source": s.source,
            "studies": s.studies,
            "watermark": s.watermark,
            "last_full_at": when(s.last_full_at),
            "last_success_at": when(s.last_success_at),
            "last_attempt_at": when(s.last_attempt_at),
            "last_error": s.last_error,
        }
        for s in states
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("source", "studies", "watermark", "last success (UTC)", "last error")
    for row in rows:
        table.add_row(
            str(row["source"]),
            str(row["studies"]),
            str(row["watermark"] or ""),
            str(row["last_success_at"] or ""),
            str(row["last_error"] or ""),
        )
    out.print(table)


@mirror_app.command("retrieve")
def retrieve(
    name: Annotated[str, typer.Argument(help="The remote PACS's name.")],
    study: Annotated[str, typer.Argument(help="The Study Instance UID.")],
    config: ConfigOption = None,
) -> None:
    """Fetch a mirrored study's instances into this archive now (WADO-RS or C-GET)."""
    from vesalius.federation.mirror import MirrorError

    with _container(config) as container:
        mirror = container.mirror
        assert mirror is not None
        row = mirror.request_retrieve(name, study)
        try:
            row = mirror.run_retrieval(row.id, container.archive)
        except MirrorError as exc:
            err.print(f"[red]Retrieval failed:[/red] {exc}")
            raise typer.Exit(1) from None
    out.print(f"Retrieved study {study} from {name}: {row.done} instances; it is local now.")


@mirror_app.command("forget")
def forget(
    name: Annotated[str, typer.Argument(help="The remote PACS's name, as its rows show it.")],
    config: ConfigOption = None,
) -> None:
    """Remove a remote PACS's mirrored patients, studies and series from the worklist (for
    a remote no longer configured; a configured one comes back at its next sync)."""
    from vesalius.index import mirror as sql

    with _container(config) as container:
        removed = container.db.run_write(lambda s: sql.forget_source(s, name))
    out.print(f"Removed {removed} studies of {name} from the worklist.")
