"""``vesalius reindex``: rebuild the imaging index from the stored files."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from vesalius.cli.serve import open_container
from vesalius.config import Settings


def run_reindex(settings: Settings, out: Console) -> int:
    container = open_container(settings)
    try:
        with Progress(
            TextColumn("Reindexing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=out,
        ) as progress:
            task = progress.add_task("reindex", total=None)

            def step(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            indexed, rejected = container.archive.reindex(step)
    finally:
        container.close()
    out.print(f"Indexed {indexed} instances from the stored files.")
    if rejected:
        table = Table("stored file", "reason", title="Left out of the index")
        for key, reason in rejected:
            table.add_row(key, reason)
        out.print(table)
        return 1
    return 0
