"""Client behaviours of SocketCluster (socketcluster-client and -server cases) that gsc.client
implements and no other test asserted (see docs/behaviours-coverage.md): subscription event
coalescing, auth state sequences, token invalidation after a key change, aborts.

gsc.client against an in-process gsc server on 127.0.0.1; all closed at teardown.
"""

import time

import gevent
import jwt
import pytest

from conftest import wait_until
from gsc.client import PENDING, SUBSCRIBED
from gsc.errors import SCError

pytestmark = pytest.mark.timeout(15)

KEY = 'testkey'
FAR = 3163758979080310


def token(username, key=KEY):
    return jwt.encode({'username': username, 'exp': FAR, 'iat': 1502747746}, key, algorithm='HS256')


BOB, KATE = token('bob'), token('kate')


@pytest.fixture
def server(make_server):
    """As in socketcluster-server's and -client's tests: login (bob, alice), setAuthKey, and the alice-blocking middleware."""
    sc = make_server({'authKey': KEY})

    def on_connection(socket, status):
        def login(data, respond):
            if data.get('username') in ('bob', 'alice'):
                socket.set_auth_token(data)
                respond()
            else:
                respond(SCError('Failed to login', name='FailedLoginError'))

        def set_auth_key(key, respond):
            sc.signature_key = sc.verification_key = key
            respond()
        socket.on('login', login)
        socket.on('setAuthKey', set_auth_key)
        socket.on('echo', lambda data, respond: respond(None, data))
    sc.on('connection', on_connection)
    sc.received = []
    sc.on('connection', lambda socket, status: socket.on('foo', lambda data, respond: sc.received.append(data)))

    def block_alice(req, next_):
        if req.authToken.get('username') == 'alice':
            next_(SCError('Blocked by MIDDLEWARE_AUTHENTICATE', name='AuthenticateMiddlewareError'))
        else:
            next_()
    sc.add_middleware(sc.MIDDLEWARE_AUTHENTICATE, block_alice)
    return sc


def record(client, *names):
    seen = []
    for name in names:
        client.on(name, lambda *args, _name=name: seen.append((_name,) + args))
    return seen


def state_changes(client):
    changes = []
    client.on('authStateChange', lambda change: changes.append(
        change['oldState'][0] + '->' + change['newState'][0]))
    return changes


def test_subscribe_then_unsubscribe_without_error(server, clients):
    """B-004, B-005, B-008: subscriptions() is ['foo'] at `subscribe`; unsubscribing later emits
    `unsubscribe` with the channel and no error happens."""
    client = clients(server.port)
    errors = record(client, 'error')
    events = record(client, 'subscribe', 'unsubscribe')
    channel = client.subscribe('foo2')
    at_subscribe = []
    channel.on('subscribe', lambda name: at_subscribe.append(client.subscriptions()))
    wait_until(lambda: at_subscribe)
    assert at_subscribe == [['foo2']]
    gevent.sleep(0.2)
    client.unsubscribe('foo2')
    wait_until(lambda: ('unsubscribe', 'foo2') in events)
    gevent.sleep(0.2)
    assert events == [('subscribe', 'foo2'), ('unsubscribe', 'foo2')]
    assert errors == [] and client.subscriptions(True) == []


def test_synchronous_subscribe_unsubscribe_pairs_coalesce(server, clients):
    """B-009: sub, unsub, sub, unsub of a new channel in one go -> neither `subscribe` nor
    `unsubscribe` within the wait; B-010: unsub, sub, unsub, sub, unsub, sub of a subscribed
    channel -> exactly ['unsubscribe', 'subscribe']."""
    client = clients(server.port)
    client.subscribe('channel2')
    client.wait_for('subscribe', 5)
    events = record(client, 'subscribe', 'unsubscribe')
    client.subscribe('channel1')
    client.unsubscribe('channel1')
    client.subscribe('channel1')
    client.unsubscribe('channel1')
    for _ in range(3):
        client.unsubscribe('channel2')
        client.subscribe('channel2')
    gevent.sleep(0.5)
    assert [e for e in events if e[1] == 'channel1'] == []
    assert [e[0] for e in events if e[1] == 'channel2'] == ['unsubscribe', 'subscribe']
    assert client.subscriptions() == ['channel2']


def test_unauthenticated_reconnect_stays_unauthenticated(server, clients):
    """B-011, B-098: unauthenticated before and after a disconnect/connect; no authStateChange."""
    client = clients(server.port)
    changes = state_changes(client)
    assert client.auth_state == 'unauthenticated'
    assert not client.wait_for('connect', 5)[0]['isAuthenticated']
    client.disconnect()
    client.connect()
    assert not client.wait_for('connect', 5)[0]['isAuthenticated']
    gevent.sleep(0.3)
    assert changes == [] and client.auth_state == 'unauthenticated'


def test_handshake_rejection_reason_is_name_and_message(server, clients):
    """B-078, B-079: a handshakeSC next(err) after 100 ms -> client errors
    [TooLazyHandshakeError, SocketProtocolError] and connectAbort(4008,
    'TooLazyHandshakeError: SC handshake failed because the server was too lazy')."""
    server.add_middleware(server.MIDDLEWARE_HANDSHAKE_SC, lambda req, next_: gevent.spawn_later(
        0.1, next_, SCError('SC handshake failed because the server was too lazy',
                            name='TooLazyHandshakeError')))
    client = clients(server.port, auto_reconnect=False)
    errors = record(client, 'error')
    code, reason = client.wait_for('connectAbort', 5)
    assert (code, reason) == (4008, 'TooLazyHandshakeError: SC handshake failed because the server was too lazy')
    wait_until(lambda: len(errors) == 2)
    assert [e[1].name for e in errors] == ['TooLazyHandshakeError', 'SocketProtocolError']


def test_a_key_change_invalidates_the_stored_token(server, clients):
    """B-043, B-093: connected with bob's token (isAuthenticated true, authError absent,
    signed/decoded token set); after setAuthKey('differentAuthKey') and a reconnect the status
    has isAuthenticated false, AuthTokenInvalidError, and the client's tokens are None."""
    client = clients(server.port, auth_token=BOB)
    status = client.wait_for('connect', 5)[0]
    assert status['isAuthenticated'] is True and not status.get('authError')
    assert client.signed_auth_token == BOB and client.auth_token['username'] == 'bob'
    assert client.invoke('setAuthKey', 'differentAuthKey') is None
    client.disconnect()
    client.connect()
    status = client.wait_for('connect', 5)[0]
    assert status['isAuthenticated'] is False
    assert status['authError'].name == 'AuthTokenInvalidError'
    assert client.signed_auth_token is None and client.auth_token is None
    assert client.auth_state == 'unauthenticated'


def test_switching_user_is_no_state_change(server, clients):
    """B-094: bob connected; login alice -> `authenticate` with alice, no `authStateChange`."""
    client = clients(server.port, auth_token=BOB)
    client.wait_for('connect', 5)
    assert client.auth_token['username'] == 'bob'
    changes = state_changes(client)
    seen = []
    client.on('authenticate', lambda signed: seen.append(client.auth_token['username']))
    client.invoke('login', {'username': 'alice'})
    wait_until(lambda: seen)
    gevent.sleep(0.1)
    assert seen == ['alice'] and changes == []


def test_authenticate_aborted_by_disconnect(server, clients):
    """B-100: authenticate(bob) then disconnect() at once -> BadConnectionError with a status
    whose isAuthenticated is not None and authError is None."""
    client = clients(server.port)
    client.wait_for('connect', 5)
    results = []
    client.authenticate(BOB, lambda err, status: results.append((err, status)))
    client.disconnect()
    wait_until(lambda: results)
    err, status = results[0]
    assert err.name == 'BadConnectionError'
    assert status is not None and status['isAuthenticated'] is not None
    assert status['authError'] is None


def test_authenticate_while_disconnected_keeps_the_state(server, clients):
    """B-101: login, disconnect (still authenticated), authenticate(new token) while
    disconnected (the client reconnects): authenticated throughout, one u->a change."""
    client = clients(server.port)
    changes = state_changes(client)
    client.invoke('login', {'username': 'bob'})
    signed = client.signed_auth_token
    client.disconnect()
    assert client.auth_state == 'authenticated'
    states = []
    client.on('connect', lambda status: states.append(client.auth_state))
    results = []
    client.authenticate(signed, lambda err, status: results.append((err, status, client.auth_state)))
    wait_until(lambda: results)
    assert results[0][0] is None and results[0][2] == 'authenticated'
    assert states == ['authenticated'] and changes == ['u->a']


def test_deauthenticate_authenticate_sequence(server, clients):
    """B-102: bob stored; deauthenticate (unauthenticated at once), authenticate(bob) (err
    None, authenticated), disconnect (still authenticated), deauthenticate while disconnected
    -> state changes u->a, a->u, u->a, a->u."""
    client = clients(server.port, auth_token=BOB)
    changes = state_changes(client)
    client.wait_for('connect', 5)
    client.deauthenticate()
    assert client.auth_state == 'unauthenticated'
    results = []
    client.authenticate(BOB, lambda err, status: results.append(err))
    wait_until(lambda: results)
    assert results == [None] and client.auth_state == 'authenticated'
    client.disconnect()
    assert client.auth_state == 'authenticated'
    client.deauthenticate()
    assert client.auth_state == 'unauthenticated'
    assert changes == ['u->a', 'a->u', 'u->a', 'a->u']


def test_invalid_authenticate_deauthenticates(server, clients):
    """B-103: bob connected; authenticate('garbage') -> AuthTokenInvalidError, unauthenticated,
    state changes u->a, a->u."""
    client = clients(server.port, auth_token=BOB, auto_connect=False)
    changes = state_changes(client)
    client.connect()
    client.wait_for('connect', 5)
    results = []
    client.authenticate('garbage', lambda err, status: results.append(err))
    wait_until(lambda: results)
    assert results[0].name == 'AuthTokenInvalidError'
    assert client.auth_state == 'unauthenticated' and changes == ['u->a', 'a->u']


def test_switching_token_with_authenticate(server, clients):
    """B-104: bob connected; authenticate(kate) -> err None, authenticated as kate, state
    changes [u->a] only; signed tokens at `authenticate` events are [bob, kate], none at
    `deauthenticate`."""
    client = clients(server.port, auth_token=BOB, auto_connect=False)
    changes = state_changes(client)
    signed = record(client, 'authenticate', 'deauthenticate')
    client.connect()
    client.wait_for('connect', 5)
    results = []
    client.authenticate(KATE, lambda err, status: results.append(err))
    wait_until(lambda: results)
    assert results == [None]
    assert client.auth_state == 'authenticated' and client.auth_token['username'] == 'kate'
    assert changes == ['u->a']
    assert signed == [('authenticate', BOB), ('authenticate', KATE)]


def test_wait_for_auth_channel_follows_the_auth_state(server, clients):
    """B-105: subscribe('priv', waitForAuth) before connecting: pending while unauthenticated,
    subscribed after login, pending while disconnected, subscribed again after reconnecting and
    authenticate(token)."""
    client = clients(server.port, auto_connect=False)
    channel = client.subscribe('priv', wait_for_auth=True)
    assert channel.state == PENDING
    client.connect()
    client.wait_for('connect', 5)
    client.invoke('echo', 'sync')
    assert channel.state == PENDING
    subscribed = record(client, 'subscribe')
    client.invoke('login', {'username': 'bob'})
    wait_until(lambda: channel.state == SUBSCRIBED)
    assert subscribed == [('subscribe', 'priv')]
    signed = client.signed_auth_token
    client.disconnect()
    assert channel.state == PENDING
    client.deauthenticate()
    client.connect()
    client.wait_for('connect', 5)
    client.invoke('echo', 'sync')
    assert channel.state == PENDING
    client.authenticate(signed)
    wait_until(lambda: channel.state == SUBSCRIBED)


def test_handshake_token_beats_a_queued_invalid_authenticate(server, clients):
    """B-106: bob stored; authenticate('garbage') and subscribe('priv', waitForAuth) before
    connecting -> connect is authenticated, priv subscribes (no subscribeFail) before the
    invalid authenticate fails; at `deauthenticate(old)` priv is still subscribed, the state is
    unauthenticated and old is bob's token; a new waitForAuth channel then never subscribes;
    state changes [u->a, a->u]."""
    client = clients(server.port, auth_token=BOB, auto_connect=False)
    changes = state_changes(client)
    order = []
    client.on('subscribe', lambda name: order.append('subscribe:' + name))
    client.on('subscribeFail', lambda err, name: order.append('subscribeFail:' + name))
    at_deauth = []
    client.on('deauthenticate', lambda old: at_deauth.append(
        (old, client.channel('priv').state, client.auth_state, client.auth_token)))
    statuses = []
    client.on('connect', lambda status: statuses.append(status['isAuthenticated']))
    client.authenticate('garbage', lambda err, status: order.append('auth:' + err.name))
    client.subscribe('priv', wait_for_auth=True)
    client.connect()
    wait_until(lambda: at_deauth)
    assert statuses == [True]
    assert order == ['subscribe:priv', 'auth:AuthTokenInvalidError']
    assert at_deauth == [(BOB, SUBSCRIBED, 'unauthenticated', None)]
    priv2 = client.subscribe('priv2', wait_for_auth=True)
    gevent.sleep(0.3)
    assert priv2.state == PENDING and 'subscribe:priv2' not in order
    assert changes == ['u->a', 'a->u']


def test_emit_on_a_disconnected_client_reconnects(server, clients):
    """B-122: disconnect() then emit('foo', 123) -> connect, disconnect, close, connecting,
    connect, and the server receives foo."""
    client = clients(server.port, auto_connect=False)
    events = record(client, 'connect', 'disconnect', 'close', 'connecting')
    client.connect()
    client.wait_for('connect', 5)
    client.disconnect()
    client.emit('foo', 123)
    wait_until(lambda: server.received == [123])
    names = [e[0] for e in events]
    assert names[names.index('connect'):] == ['connect', 'disconnect', 'close', 'connecting', 'connect']


def test_destroyed_client_does_not_reconnect(server, clients):
    """B-123, B-124: destroy() then emit/publish -> InvalidActionError each, active False,
    closed, one disconnect, no second connect."""
    client = clients(server.port)
    client.wait_for('connect', 5)
    events = record(client, 'connect', 'disconnect', 'error')
    client.destroy()
    client.emit('foo', 123)
    client.publish('thisIsATestChannel', 123)
    gevent.sleep(0.3)
    assert [e[0] for e in events] == ['disconnect', 'error', 'error']
    assert [e[1].name for e in events[1:]] == ['InvalidActionError', 'InvalidActionError']
    assert client.active is False and client.state == 'closed'
    assert server.received == []


def test_timed_out_emit_then_disconnect(server, clients):
    """B-109: ackTimeout 0.2 s and a handler answering after 1 s -> the callback gets a
    TimeoutError; disconnect() afterwards raises nothing."""
    server.on('connection', lambda socket, status: socket.on(
        'performTask', lambda data, respond: gevent.spawn_later(1, respond)))
    client = clients(server.port, ack_timeout=0.2)
    started = time.monotonic()
    results = []
    client.emit('performTask', 123, lambda err, data: results.append(err))
    wait_until(lambda: results)
    assert results[0].name == 'TimeoutError' and time.monotonic() - started < 0.9
    client.disconnect()


def test_reconnect_without_arguments(server, clients):
    """B-110: reconnect() -> disconnect(1000, None) then a new connect."""
    client = clients(server.port)
    client.wait_for('connect', 5)
    events = record(client, 'disconnect', 'connect')
    client.reconnect()
    wait_until(lambda: [e[0] for e in events] == ['disconnect', 'connect'])
    assert events[0] == ('disconnect', 1000, None)
