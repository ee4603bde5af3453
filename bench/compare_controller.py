"""Worker controller of bench/compare.py: bench/echo_controller.py plus a ``gscFile`` RPC.

compare.py names this file by its absolute path (``--wc /…/bench/compare_controller.py``), so
the run.py trees of both checkouts load the same controller, and the same echo_controller
(this directory's). ``gscFile`` answers the ``gsc.__file__`` of the worker that serves it:
compare.py checks that each tree serves its own checkout's gsc.
"""

import importlib.util
import os
import sys


def load_echo_controller():
    """bench/echo_controller.py beside this file, imported by path (sys.path is left alone)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'echo_controller.py')
    spec = importlib.util.spec_from_file_location('compare_echo_controller', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


echo_controller = load_echo_controller()


def run(worker):
    """Called once in every worker before it starts listening: echo + pid + gscFile."""
    gsc_file = sys.modules['gsc'].__file__

    def on_connection(socket, status=None):
        socket.on('gscFile', lambda data, respond: respond(None, gsc_file))

    echo_controller.run(worker)
    worker.on('connection', on_connection)
