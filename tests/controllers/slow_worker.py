"""Worker controller of the respawn tests: run() takes 1 s, then 'ranAt' answers with the
time (time.time()) at which run() finished."""

import time

import gevent


def run(worker):
    """Sleep 1 s (a slow start), then answer 'ranAt' on every socket."""
    gevent.sleep(1)
    ran_at = time.time()

    def on_connection(socket, _status):
        socket.on('ranAt', lambda _data, respond: respond(None, ran_at))
    worker.on('connection', on_connection)
