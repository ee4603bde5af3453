"""The sample worker controller: the realtime half of a small chat.

``python run.py`` serves it on port 8000, beside the chat page of ``chat_app.py``.  A page
(or any SocketCluster client) may:

* ``emit('login', name)``: the socket gets the auth token ``{'username': name}``; the
  answer is ``{'username': name}``.
* ``emit('whoami')``: answers ``{'username', 'worker', 'pid'}``: which worker serves me.
* ``emit('roll')``: answers ``{'username', 'roll'}``, a dice roll (an rpc with an ack).
* ``emit('channels')``: answers the channels the brokers relay (``exchange.send``).
* ``emit('echo', data)``: answers ``data``.
* subscribe to ``room/<name>``; once logged in, publish ``{'text': ...}`` there.  The
  worker adds ``from`` (the sender's name) to each message: nobody speaks for another.
  run.py gives the rooms history with ``publishOffsets`` (subscribe with ``{'history': 50}``
  for the last 50, ``{'recover': {'offset', 'epoch'}}`` after a reconnect) and presence
  (``#presence``, and ``#join``/``#leave`` with ``{'joinLeave': True}``; the user is the
  login name).
* subscribe to ``private/<username>`` as that user only; any logged-in user may publish
  there (a private message).
"""

import logging
import random
import re

from gsc import AuthError, InvalidArgumentsError

log = logging.getLogger(__name__)

NAME = re.compile(r'^[\w.-]{1,32}$')
MAX_TEXT = 500


def username(socket):
    """The name in the socket's auth token; None before ``login``."""
    token = socket.auth_token
    return token.get('username') if isinstance(token, dict) else None


def check_subscribe(req):
    """``subscribe`` middleware: rooms are open to all, ``private/<name>`` to <name> only."""
    channel = req.channel
    if not isinstance(channel, str) or not channel.startswith('private/'):
        return
    name = username(req.socket)
    if name is None:
        raise AuthError('Log in to subscribe to %s' % channel)
    if channel != 'private/' + name:
        raise AuthError('%s is private to %s' % (channel, channel[len('private/'):]))


def check_publish(req):
    """``publishIn`` middleware: logged-in users publish ``{'text'}``; ``from`` is added."""
    name = username(req.socket)
    if name is None:
        raise AuthError('Log in to publish to %s' % req.channel)
    if not isinstance(req.data, dict) or not isinstance(req.data.get('text'), str):
        raise InvalidArgumentsError('A chat message is {"text": "..."}')
    req.data = {'from': name, 'text': req.data['text'][:MAX_TEXT]}


def run(worker):
    """Called once in every worker before it starts listening."""
    log.info('Worker %s is up (PID %s)', worker.id, worker.pid)
    server = worker.sc_server
    server.add_middleware(server.MIDDLEWARE_SUBSCRIBE, check_subscribe)
    server.add_middleware(server.MIDDLEWARE_PUBLISH_IN, check_publish)

    def on_connection(socket, status=None):
        def login(name, respond):
            if not isinstance(name, str) or not NAME.match(name):
                respond(InvalidArgumentsError('A name is 1 to 32 letters, digits, "." or "-"'))
                return
            socket.set_auth_token({'username': name})
            respond(None, {'username': name})

        def whoami(_data, respond):
            respond(None, {'username': username(socket), 'worker': worker.id, 'pid': worker.pid})

        def roll(_data, respond):
            respond(None, {'username': username(socket), 'roll': random.randint(1, 6)})

        def channels(_data, respond):
            def answered(err, answers):
                respond(err, None if err else sorted({c for a in answers for c in a['channels']}))
            worker.exchange.send({'type': 'channels'}, '*', answered)

        socket.on('login', login)
        socket.on('whoami', whoami)
        socket.on('roll', roll)
        socket.on('channels', channels)
        socket.on('echo', lambda data, respond: respond(None, data))

    worker.on('connection', on_connection)
