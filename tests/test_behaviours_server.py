"""Server-side behaviours of SocketCluster that no other test asserted (see
docs/behaviours-coverage.md): lifecycle events, unsubscribe order with a slow engine,
kickOut, destroy, middleware timing, async signing/verifying, and the warnings of X-13/X-26.

Raw WebSocket clients (tests/wsraw.py) or gsc.client against an in-process server on
127.0.0.1; every server and client is closed at teardown.
"""

import json
import time

import gevent
import jwt
import pytest

from conftest import handshake, open_socket, recv_json, subscribe_then_leave, wait_until
from gsc.engines.simple import SimpleEngine
from gsc.errors import SCError

pytestmark = pytest.mark.timeout(15)

KEY = 'testkey'


def token(payload, key=KEY, **claims):
    return jwt.encode(dict(payload, **claims), key, algorithm='HS256')


def record(emitter, *names):
    """(name, args) of every ``names`` event of ``emitter``, in order."""
    seen = []
    for name in names:
        emitter.on(name, lambda *args, _name=name: seen.append((_name, args)))
    return seen


def test_the_exchange_is_set_when_handshake_fires(make_server, raw):
    """B-057: at the server's `handshake` event, socket.exchange is already the server's exchange."""
    server = make_server()
    seen = []
    server.on('handshake', lambda socket: seen.append(getattr(socket, 'exchange', None)))
    handshake(raw(server))
    wait_until(lambda: seen)
    assert seen[0] is server.exchange


def test_a_disconnect_after_the_handshake_is_a_disconnection_not_an_abort(make_server, raw):
    """B-060, B-062: after a completed handshake a client close fires socket `disconnect` and
    `close` (after `connection`), server `disconnection` and `closure`; never `connectAbort` /
    `connectionAbort`."""
    server = make_server()
    events = record(server, 'connection', 'disconnection', 'connectionAbort', 'closure')
    socket_events = []
    server.on('connection', lambda socket, status: socket_events.extend(
        [record(socket, 'disconnect', 'connectAbort', 'close')]))
    client = raw(server)
    handshake(client)
    wait_until(lambda: socket_events)
    gevent.sleep(0.05)
    client.close(1000)
    wait_until(lambda: any(name == 'close' for name, _ in socket_events[0]))
    assert [name for name, _ in events] == ['connection', 'disconnection', 'closure']
    assert events[2][1][0].state == 'closed'
    assert [name for name, _ in socket_events[0]] == ['disconnect', 'close']


class SlowUnsubscribeEngine(SimpleEngine):
    """An engine whose unsubscribe calls back 100 ms late (B-067's delayed broker)."""

    def __init__(self):
        SimpleEngine.__init__(self)
        self.unsubscribed = []

    def unsubscribe(self, channel, callback=None):
        def later():
            self.unsubscribed.append(channel)
            if callback is not None:
                callback(None)
        gevent.spawn_later(0.1, later)


def test_unsubscribe_precedes_disconnect_even_with_a_slow_engine(make_server, raw):
    """B-066, B-067: with an engine whose unsubscribe answers 100 ms late, the server socket
    still emits `unsubscribe('foo')` before `disconnect`."""
    engine = SlowUnsubscribeEngine()
    server = make_server({}, engine=engine)
    order = []

    def on_connection(socket, status):
        socket.on('unsubscribe', lambda channel: order.append('unsubscribe:' + channel))
        socket.on('disconnect', lambda code, data: order.append('disconnect'))
    server.on('connection', on_connection)
    subscribe_then_leave(server, raw)
    wait_until(lambda: 'disconnect' in order)
    assert order == ['unsubscribe:foo', 'disconnect']
    wait_until(lambda: engine.unsubscribed == ['foo'])


def test_unsubscribing_from_an_unknown_channel_is_one_socket_error(make_server, raw):
    """B-068, X-16: `#unsubscribe 'bar'` without a subscription -> exactly one socket `error`
    named BrokerError, the same error in the response and a server warning."""
    server = make_server()
    errors, warnings = [], []
    server.on('warning', warnings.append)
    server.on('connection', lambda socket, status: socket.on('error', errors.append))
    client = raw(server)
    handshake(client)
    client.send('{"event":"#unsubscribe","data":"bar","cid":2}')
    answer = recv_json(client)
    gevent.sleep(0.1)
    assert [e.name for e in errors] == ['BrokerError']
    assert answer['error']['name'] == 'BrokerError'
    assert answer['error']['message'] == str(errors[0])
    assert [str(w) for w in warnings] == [str(errors[0])]


def test_kick_out_of_one_channel_and_of_all(make_server, raw):
    """B-070, B-071 (gsc fixes kickOut() without a channel: it kicks every channel): no socket
    errors, channelSubscriptionsCount 0 and an empty channelSubscriptions map afterwards."""
    server = make_server()
    sockets, errors = [], []

    def on_connection(socket, status):
        sockets.append(socket)
        socket.on('error', errors.append)
    server.on('connection', on_connection)
    one, both = raw(server), raw(server)
    handshake(one)
    handshake(both)
    one.send('{"event":"#subscribe","data":{"channel":"foo"},"cid":2}')
    assert recv_json(one) == {'rid': 2}
    for cid, channel in ((2, 'foo'), (3, 'bar')):
        both.send(json.dumps({'event': '#subscribe', 'data': {'channel': channel}, 'cid': cid}))
        assert recv_json(both) == {'rid': cid}
    gevent.sleep(0.05)
    sockets[0].kick_out('foo', 'Socket was kicked out of the channel')
    assert sockets[1].channel_subscriptions_count == 2
    sockets[1].kick_out()
    assert recv_json(one) == {'event': '#kickOut', 'data': {
        'message': 'Socket was kicked out of the channel', 'channel': 'foo'}}
    assert sorted(recv_json(both)['data']['channel'] for _ in range(2)) == ['bar', 'foo']
    gevent.sleep(0.1)
    for socket in sockets:
        assert socket.channel_subscriptions_count == 0
        assert socket.channel_subscriptions == {} and socket.subscriptions() == []
    assert errors == []
    server.exchange.publish('foo', 'nobody')
    one.send('{"event":"#subscribe","data":{"channel":"probe"},"cid":9}')
    assert recv_json(one) == {'rid': 9}


def test_destroy_reaches_the_client_and_clears_active(make_server, clients):
    """B-072, B-073: socket.active is true on connection; socket.destroy(1000, 'Custom reason')
    -> the client sees disconnect(1000, 'Custom reason'); by then the server counts 0 clients and
    the socket is no longer active."""
    server = make_server()
    sockets, active_at_connection = [], []

    def on_connection(socket, status):
        sockets.append(socket)
        active_at_connection.append(socket.active)
    server.on('connection', on_connection)
    client = clients(server.port, auto_reconnect=False)
    client.wait_for('connect', 5)
    at_disconnect = []
    client.on('disconnect', lambda code, reason: at_disconnect.append(
        (code, reason, server.clients_count, server.pending_clients_count, sockets[0].active)))
    sockets[0].destroy(1000, 'Custom reason')
    wait_until(lambda: at_disconnect)
    assert active_at_connection == [True]
    assert at_disconnect == [(1000, 'Custom reason', 0, 0, False)]


def test_authenticate_middleware_runs_only_for_a_token(make_server, clients):
    """B-076, B-077: without a token the authenticate middleware has not run by `connect`; with
    a stored token it has run by the client's `authenticate` event."""
    server = make_server({'authKey': KEY})
    runs = []
    server.add_middleware(server.MIDDLEWARE_AUTHENTICATE,
                          lambda req, next_: (runs.append(req.authToken['username']), next_()))
    plain = clients(server.port)
    plain.wait_for('connect', 5)
    assert runs == []
    authed = clients(server.port, auth_token=token({'username': 'bob'}), auto_connect=False)
    seen = []
    authed.on('authenticate', lambda signed: seen.append(list(runs)))
    authed.connect()
    wait_until(lambda: seen)
    assert seen == [['bob']]


def test_a_slow_handshake_middleware_delays_connect(make_server, clients):
    """B-081: a handshakeSC middleware calling next() after 500 ms -> `connect` > 400 ms after
    the client was created."""
    server = make_server()
    server.add_middleware(server.MIDDLEWARE_HANDSHAKE_SC,
                          lambda req, next_: gevent.spawn_later(0.5, next_))
    started = time.monotonic()
    client = clients(server.port)
    client.wait_for('connect', 5)
    assert time.monotonic() - started > 0.4


def test_rejected_handshake_warns(make_server, raw):
    """X-26: a handshakeSC rejection gives the server warning 'Server rejected handshake from
    client' next to connectionAbort 4008."""
    server = make_server()
    warnings = []
    server.on('warning', warnings.append)
    aborts = record(server, 'connectionAbort')
    server.add_middleware(server.MIDDLEWARE_HANDSHAKE_SC,
                          lambda req, next_: next_(SCError('lazy', name='TooLazyHandshakeError')))
    client = raw(server)
    answer = handshake(client)
    assert answer['data'] == {'code': 4008}
    wait_until(lambda: aborts)
    assert aborts[0][1][1] == 4008
    wait_until(lambda: any(str(w) == 'Server rejected handshake from client' for w in warnings))


def test_a_blocked_subscribe_warns_and_a_silent_block_does_not(make_server, raw):
    """X-13: subscribe middleware error -> error response + server warning; next(True) ->
    SilentMiddlewareBlockedError type subscribe, no warning."""
    server = make_server()
    warnings = []
    server.on('warning', warnings.append)

    def middleware(req, next_):
        if req.channel == 'blocked':
            next_(SCError('nope', name='BlockedSubError'))
        else:
            next_(True)
    server.add_middleware(server.MIDDLEWARE_SUBSCRIBE, middleware)
    client = raw(server)
    handshake(client)
    client.send('{"event":"#subscribe","data":{"channel":"blocked"},"cid":6}')
    assert recv_json(client) == {'rid': 6, 'error': {'message': 'nope', 'name': 'BlockedSubError'}}
    client.send('{"event":"#subscribe","data":{"channel":"quiet"},"cid":7}')
    assert recv_json(client)['error'] == {
        'message': 'Action was silently blocked by subscribe middleware',
        'name': 'SilentMiddlewareBlockedError', 'type': 'subscribe'}
    gevent.sleep(0.05)
    assert [(w.name, str(w)) for w in warnings] == [('BlockedSubError', 'nope')]


def test_invalid_subscribe_and_unsubscribe_names(make_server, raw):
    """X-35 (the cases test_server_wire leaves out): `#subscribe [null]` and `#unsubscribe null`."""
    server = make_server()
    client, server_socket = open_socket(server, raw)
    client.send('{"event":"#subscribe","data":[null],"cid":2}')
    client.send('{"event":"#unsubscribe","data":null,"cid":3}')
    first, second = recv_json(client), recv_json(client)
    socket_id = server_socket.id
    assert first['rid'] == 2 and first['error']['message'] == (
        'Failed to subscribe socket to the undefined channel - Socket %s provided an invalid '
        'channel name' % socket_id)
    assert second['rid'] == 3 and second['error']['message'] == (
        'Failed to unsubscribe socket from the null channel - Socket %s tried to unsubscribe '
        'from an invalid channel name' % socket_id)


def test_expired_token_with_wait_for_auth_skips_the_subscribe_middleware(make_server, raw):
    """X-30: the first packet after expiry is `#subscribe` with waitForAuth -> the subscribe
    middleware is not called; #removeAuthToken then AuthTokenExpiredError with the numeric exp."""
    server = make_server({'authKey': KEY})
    called = []
    server.add_middleware(server.MIDDLEWARE_SUBSCRIBE,
                          lambda req, next_: (called.append(req.channel), next_()))
    exp = int(time.time()) + 1
    client = raw(server)
    assert handshake(client, token({'username': 'bob'}, exp=exp))['data']['isAuthenticated'] is True
    while time.time() <= exp + 0.05:
        gevent.sleep(0.05)
    client.send('{"event":"#subscribe","data":{"channel":"priv","waitForAuth":true},"cid":2}')
    assert recv_json(client) == {'event': '#removeAuthToken', 'data': None}
    assert recv_json(client) == {'rid': 2, 'error': {
        'message': 'The socket auth token has expired', 'name': 'AuthTokenExpiredError',
        'expiry': exp}}
    assert called == []


@pytest.mark.parametrize('options', [{'authSignAsync': True}, {'authSignAsync': False}])
def test_login_signs_with_either_signing_mode(make_server, clients, options):
    """B-047, B-048, B-095, B-096: with authSignAsync true or false the client's `authenticate`
    event shows `authenticated` and bob, and the token is set inside the login callback."""
    server = make_server(dict(options, authKey=KEY))
    server.on('connection', lambda socket, status: socket.on(
        'login', lambda data, respond: (socket.set_auth_token(data), respond())))
    client = clients(server.port)
    seen, in_callback = [], []
    client.on('authenticate', lambda signed: seen.append((client.auth_state, client.auth_token['username'])))
    client.emit('login', {'username': 'bob'}, lambda err, data: in_callback.append(
        (err, client.auth_state, client.auth_token and client.auth_token['username'])))
    wait_until(lambda: seen and in_callback)
    assert seen == [('authenticated', 'bob')]
    assert in_callback == [(None, 'authenticated', 'bob')]


def test_async_set_auth_token_emits_auth_token_signed(make_server, raw):
    """B-054: authSignAsync true and setAuthToken(details, {async: true}) -> the socket emits
    `authTokenSigned(signedToken)`, non-null and equal to socket.signed_auth_token."""
    server = make_server({'authKey': KEY, 'authSignAsync': True})
    signed = []

    def on_connection(socket, status):
        socket.on('authTokenSigned', lambda tok: signed.append((tok, socket)))
        socket.on('login', lambda data, respond: (socket.set_auth_token(data, {'async': True}), respond()))
    server.on('connection', on_connection)
    client = raw(server)
    handshake(client)
    client.send('{"event":"login","data":{"username":"bob"},"cid":2}')
    packet = recv_json(client)
    assert packet['event'] == '#setAuthToken'
    wait_until(lambda: signed)
    tok, socket = signed[0]
    assert tok and tok == socket.signed_auth_token == packet['data']['token']
    assert jwt.decode(tok, KEY, algorithms=['HS256'])['username'] == 'bob'


@pytest.mark.parametrize('verify_async', [False, True])
def test_token_verified_on_reconnect_in_either_verify_mode(make_server, clients, verify_async):
    """B-049, B-097: with authVerifyAsync false (or true) the token from login authenticates
    the reconnect: status isAuthenticated true and authToken.username bob."""
    server = make_server({'authKey': KEY, 'authVerifyAsync': verify_async})
    server.on('connection', lambda socket, status: socket.on(
        'login', lambda data, respond: (socket.set_auth_token(data), respond())))
    client = clients(server.port)
    client.invoke('login', {'username': 'bob'})
    client.disconnect()
    client.connect()
    status = client.wait_for('connect', 5)[0]
    assert status['isAuthenticated'] is True
    assert client.auth_token['username'] == 'bob'


def test_the_auth_engine_gets_the_token_the_key_and_the_socket(make_server, raw):
    """B-055: a custom auth engine's verify_token is called with the stored token string, the
    verification key 'testkey' and options whose `socket` is the connecting socket (gsc's engine
    API returns the payload instead of taking a callback)."""
    from gsc.server.auth import AuthEngine
    calls = []

    class RecordingAuth(AuthEngine):
        def verify_token(self, signed_token, key, options=None):
            calls.append((signed_token, key, dict(options or {})))
            return super().verify_token(signed_token, key, options)
    server = make_server({'authKey': KEY, 'authEngine': RecordingAuth()})
    handshakes = []
    server.on('handshake', handshakes.append)
    bob = token({'username': 'bob', 'exp': 3163758979080310, 'iat': 1502747746})
    assert handshake(raw(server), bob)['data']['isAuthenticated'] is True
    [(signed, key, options)] = calls
    assert (signed, key) == (bob, KEY)
    assert options['socket'] is handshakes[0]


def test_malformed_pub_sub_packets_each_get_an_error(make_server, raw):
    """B-065: cids 2-8: #subscribe [null], #subscribe {channel: {hello: 123}}, #subscribe null,
    #unsubscribe [null], #publish null, #publish {channel: {hello: 123}}, #publish
    {channel: null} -> each a non-null error response; the server keeps serving."""
    server = make_server()
    server.on('connection', lambda socket, status: socket.on('echo', lambda d, respond: respond(None, d)))
    client = raw(server)
    handshake(client)
    frames = [('#subscribe', [None]), ('#subscribe', {'channel': {'hello': 123}}), ('#subscribe', None),
              ('#unsubscribe', [None]), ('#publish', None), ('#publish', {'channel': {'hello': 123}}),
              ('#publish', {'channel': None})]
    for cid, (event, data) in enumerate(frames, start=2):
        client.send(json.dumps({'event': event, 'data': data, 'cid': cid}))
    answers = {}
    for _ in frames:
        answer = recv_json(client, timeout=0.3)
        answers[answer['rid']] = answer.get('error')
    assert sorted(answers) == list(range(2, 9))
    assert all(error for error in answers.values())
    client.send('{"event":"echo","data":"alive","cid":9}')
    assert recv_json(client) == {'rid': 9, 'data': 'alive'}


def test_deauthenticate_reports_the_token_of_the_connection(make_server, raw):
    """B-045: bob's token in the handshake, then the client deauthenticates -> the socket's
    `deauthenticate(oldToken)` gets the very authToken object it had at connection; socket
    authStateChange and server authenticationStateChange are [u->a with bob, a->u without token]."""
    server = make_server({'authKey': KEY})
    at_connection, deauths, socket_changes, server_changes = [], [], [], []

    def on_connection(socket, status):
        at_connection.append(socket.auth_token)
        socket.on('deauthenticate', deauths.append)
    server.on('handshake', lambda socket: socket.on('authStateChange', socket_changes.append))
    server.on('connection', on_connection)
    server.on('authenticationStateChange', lambda socket, change: server_changes.append(change))
    client = raw(server)
    assert handshake(client, token({'username': 'bob'}))['data']['isAuthenticated'] is True
    client.send('{"event":"#removeAuthToken"}')
    wait_until(lambda: deauths)
    assert deauths[0] is at_connection[0] and deauths[0]['username'] == 'bob'
    for changes in (socket_changes, server_changes):
        assert [(c['oldState'], c['newState']) for c in changes] == [
            ('unauthenticated', 'authenticated'), ('authenticated', 'unauthenticated')]
        assert changes[0]['authToken']['username'] == 'bob' and 'authToken' not in changes[1]
