"""Shipped plugin: the research records' link to the archive.

The first instance of a study gives its subject (derived from the PatientID by the identifier
scheme) an imaging session on the timeline, in the same transaction as the instance, so the
portal shows the link the moment the study can be found. It runs as a study hook: isolated in
a savepoint, a failure is logged and replayed by the ``archive.study_hook`` job instead of
failing the store, and ``vesalius reindex`` (which indexes every study again) rebuilds it.
"""

from __future__ import annotations

from typing import Any


def setup(plugin: Any) -> None:
    records = plugin.container.records

    def imaging_session(session: Any, study: Any) -> None:
        records.on_instance_indexed(session, study.data)

    plugin.add_study_hook(imaging_session)
