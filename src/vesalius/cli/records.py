"""``vesalius records ...``: bulk import, export of a subject, and linking archived studies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from vesalius.errors import VesaliusError

app = typer.Typer(
    help="Research records: subjects, their timeline, files and heart models.",
    no_args_is_help=True,
)
err = Console(stderr=True)
out = Console()

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML configuration file (default: $VESALIUS_CONFIG)."),
]


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=out,
    )


@app.command("import")
def import_(
    paths: Annotated[
        list[Path],
        typer.Argument(help="CSV files, subject export zips, or folders holding them."),
    ],
    config: ConfigOption = None,
) -> None:
    """Import subjects and records from CSV files and subject export zips.

    CSV columns: subject_id (required); sex, birth_date, cohort, subject_description; for an
    event: kind, date, title, description, position, session_number, study_instance_uids (;),
    allow_pending_links; note_text, note_author, note_kind; height_cm, weight_kg,
    heart_rate_bpm, systolic_bp_mmhg, diastolic_bp_mmhg, diagnosis, diagnosis.<name>; file and
    media_type (aux_file); model_data and model_metadata (heart_model). Paths are relative to
    the CSV. Prints what was refused and why; exits with status 1 when anything was.
    """
    from vesalius.cli.main import settings_or_exit
    from vesalius.cli.serve import open_container
    from vesalius.records import bulk

    container = open_container(settings_or_exit(config))
    report = bulk.BulkReport()
    try:
        units = list(bulk.discover(paths, report))
        with _progress() as progress:
            task = progress.add_task("Importing records", total=len(units))
            bulk.run(container.records, units, report, lambda: progress.advance(task))
    finally:
        container.close()
    out.print(
        f"Subjects created {report.subjects_created}, updated {report.subjects_updated}, "
        f"imported from zips {report.subjects_imported}; events added {report.events_added}; "
        f"rejected {len(report.rejected)}."
    )
    if report.rejected:
        table = Table("where", "reason", title="Rejected")
        for label, reason in report.rejected:
            table.add_row(label, reason)
        out.print(table)
        raise typer.Exit(1)


@app.command("export")
def export(
    subject_id: Annotated[str, typer.Argument(help="The subject to export.")],
    output: Annotated[Path, typer.Argument(help="The zip file to write.")],
    config: ConfigOption = None,
) -> None:
    """Write one subject as a zip: its DICOM studies, files, models and a JSON manifest."""
    import shutil

    from vesalius.cli.main import settings_or_exit
    from vesalius.cli.serve import open_container
    from vesalius.records.export import export_subject

    container = open_container(settings_or_exit(config))
    try:
        spool = export_subject(container.records, subject_id)
    except VesaliusError as exc:
        err.print(f"[red]Cannot export:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        container.close()
    with spool, output.open("wb") as fh:
        shutil.copyfileobj(spool, fh)
    out.print(f"Wrote {output} ({output.stat().st_size} bytes).")


@app.command("sync")
def sync(config: ConfigOption = None) -> None:
    """Give every archived study without an imaging session its subject and session.

    For an archive upgraded from one without records, or studies whose subject record was
    deleted. Sessions that exist are left as they are (a change of subject_id_scheme does not
    move them to other subjects).
    """
    from vesalius.cli.main import settings_or_exit
    from vesalius.cli.serve import open_container

    container = open_container(settings_or_exit(config))
    try:
        with _progress() as progress:
            task = progress.add_task("Linking studies", total=None)
            seen = container.records.sync_from_index(
                lambda done, total: progress.update(task, completed=done, total=total)
            )
    finally:
        container.close()
    out.print(f"Checked {seen} studies.")
