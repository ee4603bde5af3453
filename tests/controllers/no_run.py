"""A controller without a run() function."""
