"""The sample worker controller: ``python run.py`` serves it on ws://HOST:8000/socketcluster/.

Every socket may ``emit('echo', data)`` (answered with ``data``) and
``emit('login', username)`` (answered after the socket got a token
``{'username': username}``); clients may subscribe and publish on any channel.
"""

import logging

log = logging.getLogger(__name__)


def run(worker):
    """Called once in every worker before it starts listening."""
    log.info('   >> Worker PID: %s', worker.pid)

    def on_connection(socket, status=None):
        def echo(data, respond):
            respond(None, data)

        def login(data, respond):
            socket.set_auth_token({'username': data})
            respond()

        socket.on('echo', echo)
        socket.on('login', login)

    worker.on('connection', on_connection)
