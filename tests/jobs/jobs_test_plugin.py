"""A plugin for the job tests, loaded by ``vesalius serve`` through the ``plugins`` setting:
each ``test.record`` job appends its id and the process id to the file its payload names."""

from __future__ import annotations

import os
import time
from typing import Any

from vesalius import jobs


@jobs.job("test.record", max_attempts=3, lease_s=30)
def record(payload: dict[str, Any], context: jobs.JobContext) -> None:
    time.sleep(float(payload.get("sleep", 0.0)))
    with open(payload["path"], "a") as fh:
        fh.write(f"{context.job_id} {os.getpid()}\n")
