"""Worker controller of the history cluster tests: tells each client its worker (id, pid)."""

import os


def run(worker):
    """Each new socket gets the event 'worker' {id, pid}."""
    worker.on('connection', lambda socket, status: socket.emit('worker', {'id': worker.id,
                                                                          'pid': os.getpid()}))
