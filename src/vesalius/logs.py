"""One logging setup for the whole program, applied by the command line."""

from __future__ import annotations

import logging

from rich.logging import RichHandler


def setup_logging(level: str = "INFO", *, plain: bool = False) -> None:
    """Log to stderr: rich formatting on a terminal, plain lines otherwise."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler: logging.Handler
    if plain:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler = RichHandler(show_path=False, rich_tracebacks=True)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("pynetdicom").setLevel("WARNING" if level != "DEBUG" else "DEBUG")
    _quiet_pynetdicom()
    logging.getLogger("alembic").setLevel("WARNING")


def _quiet_pynetdicom() -> None:
    """pynetdicom's own logging switches, for every association Vesalius opens with it (C-MOVE
    sub-associations, routes, commitment reports, remote queries and the mirror): no handlers of
    its own formatting each PDU and message, no log line built per identifier of a long listing.
    """
    from pynetdicom import _config

    _config.LOG_HANDLER_LEVEL = "none"  # the levels set above decide what pynetdicom shows
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
