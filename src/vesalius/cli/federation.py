"""``vesalius central site ...`` (on the central index) and ``vesalius indexer ...`` (at a site)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vesalius.container import Container
from vesalius.errors import Conflict, NotFound

central_app = typer.Typer(
    help="The central index of a federation: the sites allowed to push to it.",
    no_args_is_help=True,
)
site_app = typer.Typer(
    help="Manage the sites that push to this central index, and their keys.",
    no_args_is_help=True,
)
central_app.add_typer(site_app, name="site")

out = Console()
err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML configuration file.", show_default=False),
]


@contextmanager
def _container(config: Path | None) -> Iterator[Container]:
    from vesalius.cli.main import settings_or_exit
    from vesalius.cli.serve import ServeError, open_container

    try:
        container = open_container(settings_or_exit(config))
    except ServeError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    try:
        yield container
    except (ValueError, Conflict, NotFound) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        container.close()


@site_app.command("add")
def site_add(
    code: Annotated[str, typer.Argument(help="The site's code, e.g. H01 (its records' center).")],
    config: ConfigOption = None,
) -> None:
    """Register a site and print its key, once: give it to the site as VESALIUS_INDEXER_KEY.

    A revoked site gets a new key; a site with a live key must be revoked first.
    """
    with _container(config) as container:
        key = container.central.add_site(code)
        if not container.settings.central_index:
            err.print(
                "[yellow]Note:[/yellow] central_index is off on this node: set "
                "VESALIUS_CENTRAL_INDEX=true so that `serve` accepts the site's pushes."
            )
    err.print(f"Site {code.strip()} added. Its key (shown only now):")
    typer.echo(key)  # plain stdout, so that scripts can capture it


@site_app.command("list")
def site_list(config: ConfigOption = None) -> None:
    """List the sites, their key prefix, their last push and how many studies they hold."""
    with _container(config) as container:
        sites = container.central.sites()
    table = Table("site", "key", "status", "studies", "last push (UTC)", "added (UTC)")
    for site in sites:
        table.add_row(
            site.code,
            site.key_prefix + "…",
            "revoked" if site.revoked_at else "active",
            str(site.studies),
            site.last_push_at.isoformat(sep=" ", timespec="seconds") if site.last_push_at else "",
            site.created_at.isoformat(sep=" ", timespec="seconds"),
        )
    out.print(table)


@site_app.command("revoke")
def site_revoke(
    code: Annotated[str, typer.Argument(help="The site's code.")],
    config: ConfigOption = None,
) -> None:
    """Revoke a site's key at once: its pushes are refused; its studies stay searchable."""
    with _container(config) as container:
        container.central.revoke_site(code)
    out.print(f"Site {code.strip()}'s key is revoked.")


indexer_app = typer.Typer(
    help=(
        "Push this site's study metadata to a central index (VESALIUS_INDEXER_URL, "
        "VESALIUS_INDEXER_KEY, VESALIUS_SITE_CODE). `serve` does it by itself when "
        "indexer_url is set."
    ),
    no_args_is_help=True,
)


@indexer_app.command("push")
def indexer_push(
    initial: Annotated[
        bool,
        typer.Option("--initial", help="Send every study (the first load), not only what changed."),
    ] = False,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="Index the remote PACS of this name (\\[\\[remote_pacs]]), not this archive.",
        ),
    ] = None,
    retries: Annotated[
        int,
        typer.Option(help="Attempts again, with growing waits, while the central index is down."),
    ] = 5,
    config: ConfigOption = None,
) -> None:
    """Send what changed since the last acknowledged push (new, changed and deleted studies).

    The first push of a site, or one with --initial, sends every study, with a progress bar.
    With --source NAME a remote PACS is listed over QIDO-RS and what changed there is sent.
    The watermark moves only past what the central index acknowledged, so a push that fails
    or is stopped is simply run again. Exit status 1 when the central index could not be
    reached or refused the push.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from vesalius.federation.indexer import Indexer, PushFailed
    from vesalius.logs import setup_logging

    with _container(config) as container:
        setup_logging(container.settings.log_level, plain=True)
        indexer = Indexer(container.settings, container.db, retries=max(0, retries))
        try:
            if source is not None:
                result = indexer.push_source(source)
            elif initial or not indexer.status().state.initial_done:
                with Progress(
                    "[progress.description]{task.description}",
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeRemainingColumn(),
                    console=err,
                    transient=False,
                ) as bar:
                    task = bar.add_task("studies", total=None)
                    result = indexer.push(
                        initial=True,
                        progress=lambda done, total: bar.update(task, completed=done, total=total),
                    )
            else:
                result = indexer.push()
        except PushFailed as exc:
            err.print(f"[red]Push failed:[/red] {exc}")
            raise typer.Exit(1) from None
        finally:
            indexer.close()
    out.print(
        f"Pushed {result.records} study records in {result.batches} batches "
        f"({result.upserted} upserted, {result.deleted} deleted, {result.stale} stale) "
        f"in {result.seconds:.1f} s; watermark {result.watermark}."
    )


@indexer_app.command("status")
def indexer_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    source: Annotated[
        str | None, typer.Option("--source", help="A remote PACS's push instead of this archive's.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Show the watermark, the last success, the last error and the backlog of changes."""
    import json

    from vesalius.federation.indexer import LOCAL, Indexer

    with _container(config) as container:
        status = Indexer(container.settings, container.db).status(source or LOCAL)
    state = status.state

    def when(value: object) -> str | None:
        return value.isoformat(sep=" ", timespec="seconds") if value else None  # type: ignore[attr-defined]

    data = {
        "central_index": status.url,
        "site_code": status.site_code,
        "initial_push_done": state.initial_done,
        "watermark": state.watermark,
        "latest_change": status.latest_seq,
        "backlog_changes": status.backlog,
        "local_studies": status.studies,
        "pushed_total": state.pushed_total,
        "last_success_utc": when(state.last_success_at),
        "last_attempt_utc": when(state.last_attempt_at),
        "last_error": state.last_error,
    }
    if as_json:
        typer.echo(json.dumps(data))
        return
    table = Table("", "")
    for key, value in data.items():
        table.add_row(key.replace("_", " "), "" if value is None else str(value))
    out.print(table)
