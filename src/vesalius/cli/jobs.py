"""``vesalius jobs list|retry|cancel``: the durable job queue from the command line."""

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
from vesalius.jobs import admin

app = typer.Typer(help="Look after the job queue (forwards, schedules, ...).", no_args_is_help=True)
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
    except (ValueError, Conflict, NotFound) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        container.close()


@app.command("list")
def list_(
    state: Annotated[
        str | None,
        typer.Option(help="Only jobs in this state: " + ", ".join(admin.STATES) + "."),
    ] = None,
    kind: Annotated[str | None, typer.Option(help="Only jobs of this kind.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="At most this many.")] = 50,
    config: ConfigOption = None,
) -> None:
    """List jobs, newest first, with the counts per state."""
    with _container(config) as container:
        rows = admin.list_jobs(container.db, state=state, kind=kind, limit=limit)
        counts = admin.counts(container.db)
    table = Table("id", "kind", "state", "attempts", "run at (UTC)", "last error")
    for row in rows:
        error = (row.last_error or "").splitlines()[0][:60] if row.last_error else ""
        table.add_row(
            str(row.id),
            row.kind,
            row.state,
            f"{row.attempts}/{row.max_attempts}",
            row.run_at.strftime("%Y-%m-%d %H:%M:%S"),
            error,
        )
    out.print(table)
    out.print(", ".join(f"{state}: {n}" for state, n in counts.items()))


@app.command()
def retry(
    job_id: Annotated[int, typer.Argument(help="The job's id (see `vesalius jobs list`).")],
    config: ConfigOption = None,
) -> None:
    """Queue a dead or cancelled job again, with fresh attempts."""
    with _container(config) as container:
        row = admin.retry(container.db, job_id)
    out.print(f"Job {row.id} ({row.kind}) is queued again.")


@app.command()
def cancel(
    job_id: Annotated[int, typer.Argument(help="The job's id (see `vesalius jobs list`).")],
    config: ConfigOption = None,
) -> None:
    """Cancel a queued or running job (a running one finishes, its outcome is dropped)."""
    with _container(config) as container:
        row = admin.cancel(container.db, job_id)
    out.print(f"Job {row.id} ({row.kind}) is cancelled.")
