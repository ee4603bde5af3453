"""Controllers of the process-tree tests (importable as ``tests.controllers.<name>``)."""
