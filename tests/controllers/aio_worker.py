"""Worker controller of the asyncio client tests: calls that echo, fail, ask the client back,
report the socket's token, and kick the socket out of a channel."""

import os

from gsc.errors import InvalidArgumentsError


def run(worker):
    """Each new socket gets 'worker' {id, pid} and the handlers 'echo', 'fail', 'ask',
    'whoami' and 'kick'."""
    def on_connection(socket, _status):
        socket.emit('worker', {'id': worker.id, 'pid': os.getpid()})
        socket.on('echo', lambda data, respond: respond(None, data))
        socket.on('fail', lambda data, respond: respond(
            InvalidArgumentsError('bad input %s' % data, field='n')))
        socket.on('ask', lambda data, respond: socket.emit(
            'question', data, lambda err, answer: respond(err, answer)))
        socket.on('whoami', lambda data, respond: respond(None, socket.auth_token))
        socket.on('kick', lambda data, respond: (socket.kick_out(data, 'bye'), respond()))
    worker.on('connection', on_connection)
