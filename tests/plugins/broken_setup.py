"""A plugin whose setup fails (for the tests)."""


def setup(plugin: object) -> None:
    raise RuntimeError("cannot reach the lab server")
