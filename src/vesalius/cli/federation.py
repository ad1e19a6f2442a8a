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
