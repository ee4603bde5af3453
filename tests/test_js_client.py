"""Interop: a gsc server driven by the official socketcluster-client 14.3.2 under Node.

Each test registers its handlers on an in-process server, runs one scenario of
tests/js/scenario.js (cooperatively, through gevent.subprocess) and checks what the
client observed.  Behaviour ids (B-, X-) are those listed in docs/behaviours-coverage.md.
"""

import json
import os
import shutil

import gevent
import jwt
import pytest
from gevent import subprocess

from conftest import wait_until
from kit import start_process, stop_process
from gsc.errors import SCError

JS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'js')
NODE = shutil.which('node')

pytestmark = pytest.mark.skipif(
    NODE is None or not os.path.isdir(os.path.join(JS_DIR, 'node_modules', 'socketcluster-client')),
    reason='needs node and `npm ci --prefix tests/js`')


def run_scenario(server, name, arg=None, timeout=8):
    """Run scenario ``name`` against ``server``; its observations as ``[(event, args)]``."""
    argv = [NODE, os.path.join(JS_DIR, 'scenario.js'), name, str(server.port)]
    if arg is not None:
        argv.append(arg)
    env = dict(os.environ, SCENARIO_TIMEOUT=str(timeout))
    proc = start_process(argv, popen=subprocess.Popen, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    try:
        out, err = proc.communicate(timeout=timeout + 1)
    finally:
        stop_process(proc)
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert proc.returncode == 0, 'scenario %s exited %s\nstdout: %s\nstderr: %s' % (
        name, proc.returncode, lines, err.decode())
    return [(line['event'], line['args']) for line in lines]


def args_of(observations, event):
    """The argument lists of every ``event`` observation."""
    return [args for name, args in observations if name == event]


def names(observations):
    """The event names of ``observations``, in order."""
    return [name for name, _args in observations]


def on_connection(server, **handlers):
    """Register ``handlers`` (event -> fn(socket, data, respond)) on every new socket."""
    def connected(socket, _status):
        for event, handler in handlers.items():
            socket.on(event, lambda data, respond, handler=handler: handler(socket, data, respond))
    server.on('connection', connected)


def login(socket, data, respond):
    """The login handler of socketcluster-server's tests: bob and alice get a token, anyone else FailedLoginError."""
    if data in ('bob', 'alice'):
        socket.set_auth_token({'username': data})
        respond()
    else:
        respond(SCError('Failed to login', name='FailedLoginError'))


@pytest.fixture
def server(make_server):
    return make_server({'authKey': 'testkey'})


def test_connect_status(server):
    """B-058, B-041, B-091, X-01: the client's connect status matches the server's (not its later changes)."""
    statuses = []

    def connected(socket, status):
        statuses.append((socket.id, dict(status)))
        status['foo'] = 123

    server.on('connection', connected)
    obs = run_scenario(server, 'connect')
    [[status, client]] = args_of(obs, 'connect')
    [(socket_id, server_status)] = statuses
    assert status == {'id': socket_id, 'pingTimeout': 20000, 'isAuthenticated': False,
                      'authToken': None}
    assert server_status == {'id': socket_id, 'pingTimeout': 20000, 'isAuthenticated': False}
    assert client == {'id': socket_id, 'authState': 'unauthenticated', 'pingTimeout': 20000}
    assert 'error' not in names(obs)


def test_emit_ack_error_and_timeout(server):
    """X-07, B-042: data echoed; a FailedLoginError reaches the callback; no answer -> TimeoutError."""
    on_connection(server, echo=lambda socket, data, respond: respond(None, data), login=login)
    obs = run_scenario(server, 'emit')
    assert args_of(obs, 'echo') == [[None, {'a': 1, 'b': [1, 'two', None]}]]
    [[err, data]] = args_of(obs, 'login')
    assert err == {'name': 'FailedLoginError', 'message': 'Failed to login'}
    assert data is None
    [[err]] = args_of(obs, 'nobodyListens')
    assert err['name'] == 'TimeoutError'
    assert err['message'] == "Event response for 'nobodyListens' timed out"


def test_server_emit_with_callback(server):
    """X-20: socket.emit(event, data, callback) gets the client's res(null, data)."""
    answers = []

    def answered(socket, err, data):
        answers.append((err, data))
        socket.emit('end')

    on_connection(server, ready=lambda socket, _data, _respond: socket.emit(
        'fromServer', {'n': 42}, lambda err, data: answered(socket, err, data)))
    obs = run_scenario(server, 'serverEmit')
    assert args_of(obs, 'fromServer') == [[{'n': 42}]]
    assert answers == [(None, {'ack': True, 'got': {'n': 42}})]


def test_publish_and_exchange_publish(server):
    """B-002, B-003: client publish reaches its own watcher; so does server.exchange.publish."""
    on_connection(server, ping=lambda socket, _data, _respond: server.exchange.publish(
        'pong', {'message': 'This is pong data'}))
    subscriptions = []
    server.on('subscription', lambda socket, channel, request: subscriptions.append(channel))
    obs = run_scenario(server, 'pubsub')
    assert subscriptions == ['pong']
    assert args_of(obs, 'publish') == [[None, None]]
    assert args_of(obs, 'watch') == [[{'message': 'published pong'}],
                                     [{'message': 'This is pong data'}]]


def test_login_survives_reconnect(server):
    """B-012, B-042: setAuthToken authenticates the client; its token is accepted on reconnect."""
    on_connection(server, login=login)
    obs = run_scenario(server, 'login')
    [first, second] = args_of(obs, 'connect')
    assert first[0]['isAuthenticated'] is False
    assert args_of(obs, 'login') == [[None]]
    [[signed_token, auth_state, auth_token]] = args_of(obs, 'authenticate')[:1]
    assert auth_state == 'authenticated'
    assert auth_token['username'] == 'bob'
    assert auth_token['exp'] - auth_token['iat'] == 86400
    status, auth_state = second
    assert status['isAuthenticated'] is True
    assert 'authError' not in status
    assert status['authToken'] == signed_token
    assert auth_state == 'authenticated'
    assert jwt.decode(signed_token, 'testkey', algorithms=['HS256'])['username'] == 'bob'


def test_invalid_tokens(server):
    """B-043, B-103, X-05, X-19: a token of another key fails at handshake; 'garbage' on authenticate."""
    on_connection(server, login=login)
    foreign = jwt.encode({'username': 'bob'}, 'a different auth key of 32 bytes!', algorithm='HS256')
    obs = run_scenario(server, 'badToken', foreign)
    [[status, auth_state, signed_token]] = args_of(obs, 'connect')
    assert status['isAuthenticated'] is False
    assert status['authError'] == {'name': 'AuthTokenInvalidError', 'message': 'invalid signature'}
    assert (auth_state, signed_token) == ('unauthenticated', None)
    assert args_of(obs, 'loggedIn') == [['authenticated']]
    [[err, auth_status, auth_state, changes]] = args_of(obs, 'authenticate')
    assert err == {'name': 'AuthTokenInvalidError', 'message': 'jwt malformed'}
    assert auth_status['isAuthenticated'] is False
    assert auth_status['authError']['name'] == 'AuthTokenInvalidError'
    assert auth_state == 'unauthenticated'
    assert changes == ['unauthenticated->authenticated', 'authenticated->unauthenticated']


def test_kick_out(server):
    """B-070, X-17: kick_out('foo', msg) -> client kickOut(msg, 'foo') and an unsubscribed channel."""
    remaining = []
    errors = []

    def kick(socket, channel, _respond):
        socket.on('error', errors.append)
        socket.kick_out(channel, 'Socket was kicked out of the channel')
        remaining.append((socket.channel_subscriptions_count, socket.subscriptions()))

    on_connection(server, kickMe=kick)
    obs = run_scenario(server, 'kickOut')
    assert args_of(obs, 'kickOut') == [['Socket was kicked out of the channel', 'foo']]
    assert args_of(obs, 'unsubscribe') == [['foo']]
    assert args_of(obs, 'state') == [['unsubscribed', []]]
    assert remaining == [(0, [])]
    assert errors == []
    assert 'error' not in names(obs)


def test_server_disconnect_code_and_reason(server):
    """X-21, B-072: socket.disconnect(4321, 'custom reason') -> client disconnect(4321, 'custom reason')."""
    disconnections = []
    server.on('disconnection', lambda socket, code, data: disconnections.append((code, data)))
    on_connection(server, disconnectMe=lambda socket, _data, _respond: socket.disconnect(4321, 'custom reason'))
    obs = run_scenario(server, 'serverDisconnect')
    assert args_of(obs, 'disconnect') == [[4321, 'custom reason']]
    [[err]] = args_of(obs, 'error')
    assert err == {'name': 'SocketProtocolError', 'code': 4321,
                   'message': 'Socket connection closed with status code 4321 and reason: custom reason'}
    assert disconnections == [(4321, 'custom reason')]


def test_client_disconnect_code_and_reason(server):
    """X-22, B-113: client disconnect(4444, 'client reason') -> server disconnection(4444, same)."""
    disconnections = []
    server.on('disconnection', lambda socket, code, data: disconnections.append((code, data)))
    obs = run_scenario(server, 'clientDisconnect')
    assert args_of(obs, 'disconnect') == [[4444, 'client reason']]
    wait_until(lambda: disconnections)
    assert disconnections == [(4444, 'client reason')]


def test_handshake_rejected_with_code(server):
    """B-078, B-080, X-26: handshakeSC next(err, 4501) -> connectAbort 4501, no retry (>= 4500)."""
    def reject(_req, next_):
        err = SCError('SC handshake failed because of invalid query auth parameters',
                      name='InvalidAuthQueryHandshakeError')
        gevent.spawn_later(0.1, next_, err, 4501)

    server.add_middleware(server.MIDDLEWARE_HANDSHAKE_SC, reject)
    aborts = []
    server.on('connectionAbort', lambda socket, code, data: aborts.append(code))
    obs = run_scenario(server, 'handshakeReject')
    assert args_of(obs, 'connect') == []
    assert args_of(obs, 'connectAbort') == [
        [4501, 'InvalidAuthQueryHandshakeError: SC handshake failed because of invalid query auth parameters']]
    assert [err['name'] for [err] in args_of(obs, 'error')] == [
        'InvalidAuthQueryHandshakeError', 'SocketProtocolError']
    assert aborts == [4501]


def test_ping_keeps_connection_alive(make_server):
    """X-25, B-074 (inverse): pingInterval 200 / pingTimeout 1000: the client answers every ping."""
    server = make_server({'authKey': 'testkey', 'pingInterval': 200, 'pingTimeout': 1000})
    pongs = []
    disconnections = []
    server.on('connection', lambda socket, _status: socket.on(
        'message', lambda frame: pongs.append(frame) if frame == '#2' else None))
    server.on('disconnection', lambda socket, code, data: disconnections.append(code))
    obs = run_scenario(server, 'ping')
    [[status, ping_timeout]] = args_of(obs, 'connect')
    assert status['pingTimeout'] == ping_timeout == 1000
    assert args_of(obs, 'state') == [['open', status['id']]]
    assert args_of(obs, 'disconnect') == []
    assert 'error' not in names(obs)
    assert len(pongs) >= 8
    assert disconnections == [1000]  # the client's destroy() at the end


def test_batch_subscribe_with_rejection(server):
    """B-063, X-12, X-13: 20 batched subscriptions in one frame; the middleware refuses my-channel-12."""
    frames = []
    server.on('handshake', lambda socket: socket.on('message', frames.append))
    seen = []

    def middleware(req, next_):
        seen.append((req.channel, req.data))
        if req.channel == 'my-channel-12':
            next_(SCError('Not allowed', name='UnauthorizedSubscribeError'))
        else:
            next_()

    server.add_middleware(server.MIDDLEWARE_SUBSCRIBE, middleware)
    obs = run_scenario(server, 'batch')
    batch = json.loads(frames[1])
    assert [(p['event'], p['data']['channel']) for p in batch] == [
        ('#subscribe', 'my-channel-%d' % i) for i in range(20)]
    assert len(seen) == 20
    assert ('my-channel-10', {'foo': 123}) in seen
    assert sorted(args_of(obs, 'subscribe')) == sorted(
        [['my-channel-%d' % i] for i in range(20) if i != 12])
    [[err, channel]] = args_of(obs, 'subscribeFail')
    assert (err['name'], err['message'], channel) == (
        'UnauthorizedSubscribeError', 'Not allowed', 'my-channel-12')
    assert args_of(obs, 'watch') == [['my-channel-19', 'Hello!']]


def test_reconnect_resubscribes(server):
    """B-007: after a server disconnect(4100) the client reconnects and resubscribes."""
    subscriptions = []
    server.on('subscription', lambda socket, channel, request: subscriptions.append((socket.id, channel)))

    def publish_to(_socket, _data, _respond):
        server.exchange.publish('a', 'to a')
        server.exchange.publish('b', 'to b')

    on_connection(server, dropMe=lambda socket, _data, _respond: socket.disconnect(4100, 'come back'),
                  publishToMe=publish_to)
    obs = run_scenario(server, 'resubscribe')
    [[first_id], [second_id]] = args_of(obs, 'connect')
    assert first_id != second_id
    assert args_of(obs, 'disconnect') == [[4100, 'come back']]
    assert sorted(subscriptions) == sorted(
        [(first_id, 'a'), (first_id, 'b'), (second_id, 'a'), (second_id, 'b')])
    assert sorted(args_of(obs, 'watch')) == [['a', 'to a'], ['b', 'to b']]


def test_compressed_connection_with_the_official_client(make_server):
    """perMessageDeflate: the Node client (ws) offers permessage-deflate; with the option on,
    gsc accepts it and the emit/ack round trips of the 'emit' scenario are unchanged."""
    server = make_server({'authKey': 'testkey', 'perMessageDeflate': True})
    extensions = []
    server.on('connection', lambda socket, status: extensions.append(
        [type(e).__name__ for e in socket.socket.protocol.extensions]))
    on_connection(server, echo=lambda socket, data, respond: respond(None, data), login=login)
    obs = run_scenario(server, 'emit')
    assert extensions == [['PerMessageDeflate']]
    assert args_of(obs, 'echo') == [[None, {'a': 1, 'b': [1, 'two', None]}]]


def test_the_official_client_gets_join_leave_and_presence(make_server):
    """Presence (docs/presence.md): #join/#leave to a socket that asked for them, the #presence
    query, and a reserved #gsc/ channel refused."""
    server = make_server({'channelPresence': {'room/*': {}}})
    names = iter(['watcher', 'other'])
    server.on('connection', lambda socket, status: socket.set_auth_token({'username': next(names)}))
    observed = run_scenario(server, 'presence')
    [(err, answer, ids)] = args_of(observed, 'presence')
    assert err is None
    assert sorted(answer['members'], key=lambda m: m['user']) == [
        {'socketId': ids['other'], 'user': 'other'}, {'socketId': ids['watcher'], 'user': 'watcher'}]
    joins = [args[0] for args in args_of(observed, '#join')]
    assert {'channel': 'room/1', 'socketId': ids['other'], 'user': 'other'} in joins
    assert args_of(observed, '#leave') == [[{'channel': 'room/1', 'socketId': ids['other'], 'user': 'other'}]]
    [[failure]] = args_of(observed, 'reservedSubscribeFail')
    assert 'reserved channel' in failure['message']
    assert all('reserved' in args[0]['message'] for args in args_of(observed, 'error'))
