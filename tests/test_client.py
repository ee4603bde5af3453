"""gsc.client: the gevent SocketCluster client.

Client-only behaviours (queueing, ping timer, reconnect policy, upgrade leftovers) are
driven by a scriptable fake peer; everything else runs against the real gsc server.
"""

import json

import gevent
import pytest
from gevent.server import StreamServer
from websockets.http11 import Request
from websockets.protocol import Side
from websockets.server import ServerProtocol

from conftest import wait_until
from gsc.client import PENDING, SUBSCRIBED, UNSUBSCRIBED
from gsc.transport import WebSocketTransport, frame_header

pytestmark = pytest.mark.timeout(10)

STATUS = {'id': 'fake-id', 'pingTimeout': 20000, 'isAuthenticated': False}
HANDSHAKE_OK = {'data': STATUS}  # the handshake answer without its rid


# -- a scriptable fake peer --------------------------------------------------------------

class FakePeer:
    """One accepted connection of :class:`FakeServer`: ``send(obj|str)``, ``close(code)``."""

    def __init__(self, sock):
        self.frames = []
        self.close_code = None
        self.transport = None
        self.sock = sock

    def send(self, obj):
        self.transport.send(obj if isinstance(obj, str) else json.dumps(obj))

    def close(self, code=1000):
        self.transport.close(code)

    def packets(self):
        return [json.loads(f) if f[:1] in '{[' else f for f in self.frames]


class FakeServer:
    """A SocketCluster peer in a few lines: answers ``#handshake`` with ``handshake`` (None: never),
    records every frame, calls ``on_frame(peer, frame)``; ``leftover`` bytes follow the 101."""

    def __init__(self, handshake=HANDSHAKE_OK, on_frame=None, leftover=b'', upgrade=True):
        self.handshake = handshake
        self.on_frame = on_frame
        self.leftover = leftover
        self.upgrade = upgrade
        self.peers = []
        self.server = StreamServer(('127.0.0.1', 0), self._handle)
        self.server.start()
        self.port = self.server.server_port

    def _handle(self, sock, _address):
        if not self.upgrade:
            gevent.sleep(30)
            return
        protocol = ServerProtocol()
        while True:
            data = sock.recv(65536)
            if not data:
                return
            protocol.receive_data(data)
            requests = [e for e in protocol.events_received() if isinstance(e, Request)]
            if requests:
                break
        protocol.send_response(protocol.accept(requests[0]))
        sock.sendall(b''.join(protocol.data_to_send()) + self.leftover)
        peer = FakePeer(sock)
        self.peers.append(peer)
        peer.transport = WebSocketTransport(sock, lambda frame: self._on_message(peer, frame),
                                            lambda code, reason: setattr(peer, 'close_code', code),
                                            side=Side.SERVER)
        peer.transport.run()

    def _on_message(self, peer, frame):
        peer.frames.append(frame)
        packet = json.loads(frame) if frame[:1] == '{' else frame
        if isinstance(packet, dict) and packet.get('event') == '#handshake' and self.handshake is not None:
            peer.send({'rid': packet['cid'], **self.handshake})
        if self.on_frame is not None:
            self.on_frame(peer, packet)

    def stop(self):
        for peer in self.peers:
            peer.transport.abort()
        self.server.stop(timeout=1)


@pytest.fixture
def fake():
    servers = []

    def make(**kwargs):
        server = FakeServer(**kwargs)
        servers.append(server)
        return server
    yield make
    for server in servers:
        server.stop()


class Recorder:
    """Records the events of a client as (name, *args) tuples."""

    def __init__(self, client, *events):
        self.events = []
        for event in events:
            client.on(event, lambda *args, _event=event: self.events.append((_event,) + args))

    def names(self):
        return [e[0] for e in self.events]


def errors_of(client):
    errors = []
    client.on('error', errors.append)
    return errors


# -- fake-peer tests: client-only behaviours ---------------------------------------------

def test_initial_states(fake, clients):
    """B-085, B-086, B-098: connecting when created, closed with auto_connect off, unauthenticated."""
    server = fake()
    client = clients(server.port)
    assert client.state == 'connecting'
    assert client.auth_state == 'unauthenticated'
    idle = clients(server.port, auto_connect=False)
    assert idle.state == 'closed'
    client.wait_for('open', 3)
    assert client.id == 'fake-id'


def test_handshake_first_and_emits_queued(fake, clients):
    """#handshake with the stored token right after the upgrade; emits wait for its answer."""
    server = fake(handshake=None)
    client = clients(server.port, auth_token='stored.token.x')
    client.emit('early', 1)
    wait_until(lambda: server.peers and server.peers[0].frames)
    gevent.sleep(0.05)
    peer = server.peers[0]
    assert peer.packets() == [{'event': '#handshake', 'data': {'authToken': 'stored.token.x'}, 'cid': 1}]
    peer.send({'rid': 1, 'data': STATUS})
    wait_until(lambda: len(peer.frames) == 2)
    assert peer.packets()[1] == {'event': 'early', 'data': 1}


def test_leftover_bytes_after_upgrade_are_frames(fake, clients):
    """Bytes sent with the 101 response (here a #1 ping) reach the frame layer: the client pongs."""
    server = fake(leftover=frame_header(1, 2) + b'#1')
    client = clients(server.port)
    client.wait_for('open', 3)
    wait_until(lambda: '#2' in server.peers[0].frames)


def test_ping_timeout_closes_4000_and_reconnects_at_once(fake, clients):
    """B-128: pingTimeout comes from the handshake; no #1 in time -> 4000, error, immediate reconnect."""
    server = fake(handshake={'data': dict(STATUS, pingTimeout=300)})
    client = clients(server.port, ack_timeout=0.5)
    assert client.ping_timeout == 0.5
    errors = errors_of(client)
    client.wait_for('open', 3)
    assert client.ping_timeout == 0.3
    code, _ = client.wait_for('disconnect', 2)
    assert code == 4000
    assert client.pending_reconnect_timeout == 0
    wait_until(lambda: errors)
    assert errors[0].name == 'SocketProtocolError' and errors[0].code == 4000
    assert str(errors[0]) == 'Server ping timed out'
    client.wait_for('open', 3)
    wait_until(lambda: server.peers[0].close_code == 4000)


def test_pings_keep_alive_and_disabled_timer(fake, clients):
    """each #1 is answered #2 and restarts the timer; B-129: ping_timeout_disabled never drops."""
    server = fake(handshake={'data': dict(STATUS, pingTimeout=200)})
    client = clients(server.port)
    client.wait_for('open', 3)
    for _ in range(4):
        gevent.sleep(0.1)
        server.peers[0].send('#1')
    assert client.state == 'open'
    wait_until(lambda: server.peers[0].frames.count('#2') == 4)
    quiet = clients(server.port, ping_timeout_disabled=True)
    errors = errors_of(quiet)
    quiet.wait_for('open', 3)
    gevent.sleep(0.5)
    assert quiet.state == 'open' and errors == []


@pytest.mark.parametrize('code,reconnects', [(1000, False), (4500, False), (4321, True), (1011, True)])
def test_reconnect_policy(fake, clients, code, reconnects):
    """1000 and >= 4500 never reconnect; other codes back off (initialDelay * multiplier^n)."""
    server = fake()
    client = clients(server.port, auto_reconnect_options={'initialDelay': 50, 'randomness': 0,
                                                          'multiplier': 2, 'maxDelay': 150})
    client.wait_for('open', 3)
    server.peers[0].close(code)
    assert client.wait_for('disconnect', 2)[0] == code
    assert client.pending_reconnect is reconnects
    if reconnects:
        assert client.pending_reconnect_timeout == 50
        client.wait_for('open', 3)
        server.peers[1].close(code)
        client.wait_for('disconnect', 2)
        assert client.pending_reconnect_timeout == 50  # a successful connect resets the attempts
        server.stop()
        client.wait_for('connectAbort', 2)
        assert client.pending_reconnect_timeout in (100, 150)


def test_handshake_error_without_code_closes_4003(fake, clients):
    """a handshake error response without data.code closes with 4003 (connectAbort)."""
    server = fake(handshake={'error': {'name': 'Oops', 'message': 'no'}})
    client = clients(server.port)
    errors = errors_of(client)
    code, reason = client.wait_for('connectAbort', 3)
    assert (code, reason) == (4003, 'Oops: no')
    wait_until(lambda: any(getattr(e, 'name', '') == 'Oops' for e in errors))


def test_connect_timeout_4007(fake, clients):
    """no upgrade within connect_timeout -> connectAbort 4007."""
    server = fake(upgrade=False)
    client = clients(server.port, connect_timeout=0.2, auto_reconnect=False)
    assert client.wait_for('connectAbort', 3)[0] == 4007
    assert client.state == 'closed'


def test_refused_connection_is_1006(clients):
    """A connection error while connecting is connectAbort 1006 with a 'Socket hung up' error."""
    probe = StreamServer(('127.0.0.1', 0), lambda *a: None)
    probe.start()
    port = probe.server_port
    probe.stop()
    client = clients(port, auto_reconnect=False)
    errors = errors_of(client)
    assert client.wait_for('connectAbort', 3)[0] == 1006
    wait_until(lambda: errors)
    assert errors[0].code == 1006


def test_client_disconnect_sends_reason_then_closes_with_code(fake, clients):
    """#disconnect {code, data} then a close frame with that code."""
    server = fake()
    client = clients(server.port)
    client.wait_for('open', 3)
    client.disconnect(4444, 'client reason')
    peer = server.peers[0]
    wait_until(lambda: peer.close_code == 4444)
    assert peer.packets()[-1] == {'event': '#disconnect', 'data': {'code': 4444, 'data': 'client reason'}}


def test_server_event_with_respond_and_raw(fake, clients):
    """Server events with a cid get respond(err, data); other frames are 'raw'."""
    server = fake()
    client = clients(server.port)
    raws = Recorder(client, 'raw')
    client.on('ask', lambda data, respond: respond(None, data * 2))
    client.wait_for('open', 3)
    peer = server.peers[0]
    peer.send({'event': 'ask', 'data': 21, 'cid': 5})
    peer.send('hello')
    wait_until(lambda: {'rid': 5, 'data': 42} in peer.packets())
    wait_until(lambda: raws.events == [('raw', 'hello')])


# -- against the real gsc server ---------------------------------------------------------

class FailedLoginError(Exception):
    pass


@pytest.fixture
def server(make_server):
    sc = make_server({'authKey': 'test-key', 'ackTimeout': 1000})

    def on_connection(socket, status):
        socket.on('echo', lambda data, respond: respond(None, data))
        socket.on('fail', lambda data, respond: respond(FailedLoginError('bad thing')))
        socket.on('slow', lambda data, respond: gevent.spawn_later(1, respond, None, data))
        socket.on('login', lambda data, respond: (socket.set_auth_token({'username': data}), respond()))
        socket.on('kick', lambda data, respond: (socket.kick_out(data, 'go away'), respond()))
        socket.on('bye', lambda data, respond: socket.disconnect(data['code'], data.get('data')))
        socket.on('ask', lambda data, respond: socket.emit('question', data,
                                                              lambda err, answer: respond(err, answer)))
    sc.on('connection', on_connection)
    return sc


def test_connect_status_and_emit_ack(server, clients):
    """B-091: no authError without a token; emit with ack; invoke returns the data."""
    client = clients(server.port)
    status = client.wait_for('connect', 3)[0]
    assert status['isAuthenticated'] is False and 'authError' not in status
    assert status['pingTimeout'] == 20000 and client.id == status['id']
    answers = []
    client.emit('echo', {'x': [1, 2]}, lambda err, data: answers.append((err, data)))
    wait_until(lambda: answers == [(None, {'x': [1, 2]})])
    assert client.invoke('echo', 'hi') == 'hi'


def test_error_ack_is_hydrated(server, clients):
    """an error response becomes an exception with the server's name and message."""
    client = clients(server.port)
    with pytest.raises(Exception) as info:
        client.invoke('fail')
    assert info.value.name == 'FailedLoginError' and str(info.value) == 'bad thing'


def test_ack_timeout(server, clients):
    """B-109: no answer within ack_timeout -> TimeoutError; a later disconnect is fine."""
    client = clients(server.port, ack_timeout=0.2)
    with pytest.raises(Exception) as info:
        client.invoke('slow', 1)
    assert info.value.name == 'TimeoutError'
    assert str(info.value) == "Event response for 'slow' timed out"
    with pytest.raises(Exception) as info:
        client.invoke('nobody-listens', timeout=0.1)
    assert info.value.name == 'TimeoutError'
    client.disconnect()


def test_server_emit_with_client_respond(server, clients):
    """A server emit with a callback gets the client's respond(err, data)."""
    client = clients(server.port)
    client.on('question', lambda data, respond: respond(None, data + '!'))
    assert client.invoke('ask', 'why') == 'why!'


def test_reserved_and_local_error_emits(server, clients):
    """B-089: emit('message') -> InvalidActionError, nothing sent; B-090: emit('error') is local."""
    client = clients(server.port)
    errors = errors_of(client)
    client.wait_for('open', 3)
    client.emit('message', 123)
    wait_until(lambda: errors)
    assert errors[0].name == 'InvalidActionError'
    custom = FailedLoginError('custom')
    client.emit('error', custom)
    assert errors[-1] is custom


def test_subscribe_publish_watch(server, clients):
    """subscribe -> subscribed, publish delivered to watchers, unsubscribe stops delivery."""
    client = clients(server.port, channel_prefix='app/')
    channel = client.subscribe('foo')
    assert channel.state == PENDING and client.is_subscribed('foo', True)
    received = []
    channel.watch(received.append)
    client.wait_for('subscribe', 3)
    assert channel.state == SUBSCRIBED and client.subscriptions() == ['foo']
    client.publish('foo', 'hi')
    server.exchange.publish('app/foo', {'n': 1})
    wait_until(lambda: len(received) == 2)
    assert 'hi' in received and {'n': 1} in received
    channel.unsubscribe()
    assert channel.state == UNSUBSCRIBED
    client.invoke('echo', 'sync')
    server.exchange.publish('app/foo', 'late')
    client.invoke('echo', 'sync')
    assert len(received) == 2


def test_token_kept_across_reconnect(server, clients):
    """B-095/B-097: login sets the token (payload decoded locally) and it authenticates the reconnect."""
    client = clients(server.port)
    changes = Recorder(client, 'authStateChange', 'authenticate')
    client.invoke('login', 'bob')
    assert client.auth_state == 'authenticated' and client.auth_token['username'] == 'bob'
    token = client.signed_auth_token
    client.reconnect()
    status = client.wait_for('connect', 3)[0]
    assert status['isAuthenticated'] is True and status['authToken'] == token
    assert client.auth_state == 'authenticated'  # B-101: no change while reconnecting
    assert [e[0] for e in changes.events].count('authStateChange') == 1


def test_authenticate_and_deauthenticate(server, clients):
    """B-102/B-103: authenticate(token) then deauthenticate; an invalid token fails with its name."""
    first = clients(server.port)
    first.invoke('login', 'kate')
    token = first.signed_auth_token
    client = clients(server.port)
    changes = Recorder(client, 'authStateChange')
    client.wait_for('open', 3)
    results = []
    client.authenticate(token, lambda err, status: results.append((err, status)))
    wait_until(lambda: results)
    assert results[0] == (None, {'isAuthenticated': True, 'authError': None})
    assert client.auth_token['username'] == 'kate'
    client.deauthenticate()
    assert client.auth_state == 'unauthenticated'
    client.authenticate('not-a-jwt', lambda err, status: results.append((err, status)))
    wait_until(lambda: len(results) == 2)
    assert results[1][0].name == 'AuthTokenInvalidError'
    assert [(e[1]['oldState'], e[1]['newState']) for e in changes.events] == [
        ('unauthenticated', 'authenticated'), ('authenticated', 'unauthenticated')]


def test_resubscribe_after_server_disconnect(server, clients):
    """after a server disconnect(4001) the channel goes pending ('unsubscribe') and is
    subscribed again on the immediate reconnect."""
    client = clients(server.port)
    channel = client.subscribe('room')
    client.wait_for('subscribe', 3)
    events = Recorder(client, 'unsubscribe', 'disconnect', 'subscribe')
    client.emit('bye', {'code': 4001, 'data': 'pong'})
    wait_until(lambda: events.names() == ['unsubscribe', 'disconnect', 'subscribe'])
    assert events.events[1] == ('disconnect', 4001, 'pong')
    assert channel.state == SUBSCRIBED
    received = []
    channel.watch(received.append)
    server.exchange.publish('room', 'back')
    wait_until(lambda: received == ['back'])


def test_server_disconnect_code_and_reason(server, clients):
    """the client reports the #disconnect code and data; >= 4500 does not reconnect."""
    client = clients(server.port)
    client.wait_for('open', 3)
    errors = errors_of(client)
    client.emit('bye', {'code': 4600, 'data': {'why': 'banned'}})
    assert client.wait_for('close', 3) == (4600, {'why': 'banned'})
    assert not client.pending_reconnect
    wait_until(lambda: errors)
    assert 'status code 4600' in str(errors[0])


def test_kick_out(server, clients):
    """#kickOut -> 'kickOut'(message, channel) and the channel is unsubscribed."""
    client = clients(server.port)
    channel = client.subscribe('k1')
    client.wait_for('subscribe', 3)
    kicks = Recorder(client, 'kickOut')
    channel_kicks = []
    channel.on('kickOut', lambda message, name: channel_kicks.append(message))
    client.invoke('kick', 'k1')
    assert kicks.events == [('kickOut', 'go away', 'k1')] and channel_kicks == ['go away']
    assert channel.state == UNSUBSCRIBED


def test_wait_for_auth_channel(server, clients):
    """B-105: a waitForAuth channel stays pending until the client is authenticated."""
    client = clients(server.port)
    channel = client.subscribe('priv', wait_for_auth=True)
    client.wait_for('open', 3)
    client.invoke('echo', 'sync')
    assert channel.state == PENDING
    client.invoke('login', 'bob')
    wait_until(lambda: channel.state == SUBSCRIBED)


def test_lifecycle_events(server, clients):
    """B-107: disconnect while connecting -> connectAbort + close; B-108, B-110, B-111, B-113."""
    client = clients(server.port)
    events = Recorder(client, 'connectAbort', 'disconnect', 'close', 'connect')
    client.disconnect()
    assert events.names() == ['connectAbort', 'close']
    client.connect()
    client.wait_for('open', 3)
    client.reconnect(1000, 'About to reconnect')
    client.wait_for('open', 3)
    assert events.events[3:6] == [('disconnect', 1000, 'About to reconnect'),
                                  ('close', 1000, 'About to reconnect'), events.events[5]]
    client.destroy(4321, 'Custom disconnect reason')
    assert events.events[-2] == ('disconnect', 4321, 'Custom disconnect reason')
    assert client.state == 'closed' and not client.pending_reconnect


def test_successive_connect_disconnect(server, clients):
    """B-125: the exact event sequence of disconnect/connect calls while connecting."""
    client = clients(server.port)
    events = Recorder(client, 'connectAbort', 'close', 'connecting', 'connect', 'disconnect')
    client.disconnect(1000, 'One')
    client.connect()
    client.disconnect(4444, 'Two')
    client.once('connect', lambda status: client.disconnect(4455, 'Three'))
    client.connect()
    wait_until(lambda: len(events.events) == 9)
    assert [e if e[0] != 'connect' else ('connect',) for e in events.events] == [
        ('connectAbort', 1000, 'One'), ('close', 1000, 'One'), ('connecting',),
        ('connectAbort', 4444, 'Two'), ('close', 4444, 'Two'), ('connecting',), ('connect',),
        ('disconnect', 4455, 'Three'), ('close', 4455, 'Three')]


def test_order_of_events_on_disconnect(server, clients):
    """B-119: unsubscribe before disconnect; B-120: BadConnectionError, no subscribeFail;
    B-121: the aborted callback before 'disconnect'."""
    client = clients(server.port)
    records = []
    client.on('disconnect', lambda code, data: records.append('disconnect'))
    client.on('subscribeFail', lambda err, name: records.append('subscribeFail'))
    client.emit('echo', 1, lambda err, data: records.append(err.name if err else 'answered'))
    client.once('connect', lambda status: client.disconnect())
    client.wait_for('close', 3)
    assert records == ['BadConnectionError', 'disconnect']
    records.clear()
    client.connect()
    client.subscribe('foo')
    client.wait_for('subscribe', 3)
    client.on('unsubscribe', lambda name: records.append('unsubscribe'))
    client.emit('slow', 1, lambda err, data: records.append(err.name))
    client.subscribe('bar')
    client.disconnect()
    assert records == ['BadConnectionError', 'unsubscribe', 'disconnect']


def test_emit_after_disconnect_and_destroy(server, clients):
    """B-122: emit on a closed client reconnects; B-123/B-124: a destroyed client refuses."""
    client = clients(server.port)
    client.wait_for('open', 3)
    client.disconnect()
    assert client.invoke('echo', 123) == 123
    errors = errors_of(client)
    client.destroy()
    client.emit('foo', 123)
    client.publish('chan', 123)
    wait_until(lambda: len(errors) == 2)
    assert [e.name for e in errors] == ['InvalidActionError', 'InvalidActionError']
    assert client.state == 'closed' and client.active is False


def test_destroy_channel(server, clients):
    """B-126: channel.destroy() in its subscribe handler emits unsubscribe; B-127: unknown is a no-op."""
    client = clients(server.port)
    channel = client.subscribe('foo')
    seen = []
    channel.on('unsubscribe', seen.append)
    channel.on('subscribe', lambda name: channel.destroy())
    wait_until(lambda: seen == ['foo'])
    assert client.channel('foo') is not channel
    client.destroy_channel('fakeChannel')


def test_base64_helpers(fake, clients):
    """B-130."""
    client = clients(fake().port, auto_connect=False)
    assert client.encode_base64('This is a string') == 'VGhpcyBpcyBhIHN0cmluZw=='
    assert client.decode_base64('VGhpcyBpcyBhIHN0cmluZw==') == 'This is a string'
