"""The push to the central index as a durable job of ``vesalius serve``.

With ``indexer_url`` set, :func:`install` registers the job kind ``federation.push`` and
schedules it every ``indexer_interval_s`` (the safety net), and :func:`push_soon_hook` (wired
by the container) makes every new study enqueue it, in the study's own write transaction, to
run ``indexer_debounce_s`` later: studies stored together
are pushed together, a few seconds after they were stored. :func:`push_soon_on_changes` does
the same for instances added to existing studies and for deletions. One pending push at a time (a
dedupe key); a push that fails is retried by the job runner with backoff, and the watermark
never moves past what the central index did not acknowledge.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Any

from vesalius.federation.indexer import Indexer

log = logging.getLogger("vesalius.indexer")

PUSH = "federation.push"
SOON = "federation.push:soon"
AGAIN = "federation.push:again"


def install(container: Any) -> Indexer | None:
    """Register the push job of this node when it is a site of a federation."""
    from vesalius import jobs

    settings = container.settings
    if not settings.indexer_url:
        return None
    indexer = Indexer(settings, container.db, retries=1, backoff_s=1.0)
    if not indexer.configured:
        log.error(
            "indexer_url is set but indexer_key or site_code is not: no push to the central "
            "index until both are set"
        )
        return None

    def push(_payload: dict[str, Any]) -> None:
        indexer.push()
        # A study stored while this push ran found its key taken (this job holds it): if the
        # feed moved past what was sent, queue one more push under another key.
        if indexer.status().backlog:
            run_at = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(
                seconds=settings.indexer_debounce_s
            )
            jobs.enqueue(container.db, PUSH, {}, run_at=run_at, dedupe_key=AGAIN)

    jobs.register(PUSH, push, max_attempts=3, lease_s=3600.0)
    jobs.schedule(PUSH, settings.indexer_interval_s, {})
    log.info(
        "pushing to the central index %s as site %s (every %.0f s, and %.1f s after new studies)",
        settings.indexer_url,
        settings.site_code,
        settings.indexer_interval_s,
        settings.indexer_debounce_s,
    )
    return indexer


def push_soon_hook(settings: Any) -> Any:
    """A study hook (``Archive.add_study_hook``) that queues a push a moment later.

    It runs inside the study's write transaction, so the job commits with the study, whatever
    process stored it (``serve``, ``import``, ``reindex``); a ``serve`` process runs it.
    """
    from vesalius import jobs

    def soon(session: Any, _study: Any) -> None:
        run_at = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(
            seconds=settings.indexer_debounce_s
        )
        jobs.enqueue(session, PUSH, {}, run_at=run_at, dedupe_key=SOON)

    return soon


def push_soon_on_changes(settings: Any, db: Any, events: Any) -> None:
    """Queue the debounced push when an existing study changes: an instance added to it
    (``InstanceStored``) or instances deleted (``InstancesDeleted``).

    A new study is queued by :func:`push_soon_hook`, in its own transaction. These events
    come after commit, from whatever process stored or deleted (``serve``, ``import``); the
    job is queued in the database, so a ``serve`` runs it. One attempt per debounce period
    at most: a study arriving instance by instance queues one push, not one per instance (a
    change that finds the push already running is seen by that push's backlog check).
    """
    from vesalius import jobs
    from vesalius.events import InstancesDeleted, InstanceStored

    lock = threading.Lock()
    quiet_until = [0.0]

    def soon(event: Any) -> None:
        if isinstance(event, InstanceStored) and event.new_study:
            return  # the study hook queued it
        now = time.monotonic()
        with lock:
            if now < quiet_until[0]:
                return
            quiet_until[0] = now + settings.indexer_debounce_s
        run_at = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(
            seconds=settings.indexer_debounce_s
        )
        jobs.enqueue(db, PUSH, {}, run_at=run_at, dedupe_key=SOON)

    events.subscribe(InstanceStored, soon, "federation.push_soon")
    events.subscribe(InstancesDeleted, soon, "federation.push_soon")


def install_mirror(container: Any) -> None:
    """Register the mirror's jobs: a sync of each ``[[remote_pacs]]`` every
    ``mirror_interval_s`` (one schedule per remote), and the retrieval of remote studies."""
    from vesalius import jobs
    from vesalius.federation.mirror import RETRIEVE, SYNC

    settings = container.settings
    mirror = container.mirror
    if not settings.remote_pacs:
        return

    def sync(payload: dict[str, Any]) -> None:
        from vesalius.federation.mirror import MirrorError

        try:
            mirror.sync(str(payload["source"]))
        except MirrorError as exc:
            # Said in the log and kept as the remote's last_error (`vesalius mirror status`,
            # GET /api/remote); the next scheduled sync is the retry, so a remote that is
            # down for a day leaves no trail of dead jobs.
            log.warning("%s", exc)

    def retrieve(payload: dict[str, Any], context: Any) -> None:
        mirror.run_retrieval(int(payload["retrieval"]), context.container.archive)

    jobs.register(SYNC, sync, max_attempts=2, lease_s=3600.0)
    # One attempt: a retrieval that fails says why on its row; the user starts it again.
    jobs.register(RETRIEVE, retrieve, max_attempts=1, lease_s=6 * 3600.0)
    for pacs in settings.remote_pacs:
        jobs.schedule(
            SYNC, settings.mirror_interval_s, {"source": pacs.name}, name=f"{SYNC}:{pacs.name}"
        )
    log.info(
        "mirroring %s into the worklist (every %.0f s)",
        ", ".join(p.name for p in settings.remote_pacs),
        settings.mirror_interval_s,
    )
