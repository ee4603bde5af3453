"""A controller that fails at import."""

import this_module_does_not_exist  # noqa: F401


def run(worker):
    """Never reached."""
