"""An example Vesalius plugin (docs/plugins.md): it refuses hemodynamic waveforms (Modality
HD), counts the instances stored per modality, answers ``GET /plugins/example/counts``, adds
``vesalius example counts``, and runs a job kind ``example.note``."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

import typer
from fastapi import APIRouter

from vesalius import jobs
from vesalius.archive.service import Incoming, Reject
from vesalius.auth.permissions import Permission
from vesalius.events import InstanceStored

log = logging.getLogger(__name__)
REFUSED_MODALITY = "HD"

_counts: Counter[str] = Counter()
_lock = threading.Lock()


def refuse_waveforms(incoming: Incoming) -> Reject | None:
    """Instance filter: runs before anything is written; None accepts."""
    if (incoming.get("Modality") or "").upper() == REFUSED_MODALITY:
        return Reject(f"modality {REFUSED_MODALITY} is not archived here")
    return None


def count(event: InstanceStored) -> None:
    """Event handler: runs after the instance has committed, on the events thread."""
    with _lock:
        _counts[event.modality or "?"] += 1


router = APIRouter()


@router.get("/counts", summary="Instances stored per modality since the start")
def counts() -> dict[str, int]:
    with _lock:
        return dict(_counts)


@jobs.job("example.note", max_attempts=3)
def note(payload: dict[str, Any]) -> None:
    log.info("example note: %s", payload.get("text"))


def setup(plugin: Any) -> None:
    """Called once per process with the plugin's context."""
    plugin.add_filter(refuse_waveforms)
    plugin.subscribe(InstanceStored, count)
    plugin.add_routes(router, read=Permission.IMAGES_READ)


cli = typer.Typer(help="The example plugin's commands.", no_args_is_help=True)


@cli.command("refused")
def refused() -> None:
    """Print the modality this plugin refuses."""
    typer.echo(f"refused modality: {REFUSED_MODALITY}")


@cli.command("hello")
def hello(name: str = "world") -> None:
    """Say hello (a plugin command needs at least two to be a group)."""
    typer.echo(f"hello {name}")
