"""Worker controller of the cluster benchmarks: ``python run.py --wc bench.echo_controller``.

The same ``echo`` RPC as the standalone ``gsc`` server of bench/servers.py (answers its
data), plus ``pid`` (answers the worker's pid: the bench uses it to tell a respawned worker
from the one it killed).  run.py runs from the repository root, which gsc.cluster.controllers puts on
sys.path for a dotted name, so ``bench`` is found as a namespace package.
Warnings (one 'Socket hung up' per connection the loadgen drops) are counted and logged once
per kind, every WARN_EVERY occurrences, so a long run does not flood the log.
"""

import collections
import logging
import os

log = logging.getLogger(__name__)
WARN_EVERY = 1000


def run(worker):
    """Called once in every worker before it starts listening."""
    pid = os.getpid()
    warnings = collections.Counter()
    log.info('bench worker %s pid %s', worker.id, pid)

    def echo(data, respond):
        respond(None, data)

    def get_pid(data, respond):
        respond(None, pid)

    def on_connection(socket, status=None):
        socket.on('echo', echo)
        socket.on('pid', get_pid)

    def on_warning(warning):
        key = repr(warning)[:200]
        warnings[key] += 1
        if warnings[key] % WARN_EVERY == 1:
            log.warning('worker %s warning x%d: %s', worker.id, warnings[key], key)

    worker.on('connection', on_connection)
    worker.on('warning', on_warning)
