"""Hostile clients against the frame layer (gsc/transport.py), from the network: endless
fragmented messages, floods of tiny frames, protocol violations after valid messages, a
client that stops reading, and strings that are not valid Unicode."""

import json
import sys
import time

import gevent
import pytest
from gevent import socket, subprocess

from conftest import handshake, recv_json, wait_until
from kit import (OP_CLOSE, OP_CONT, OP_PING, FrameReader, client_frame, close_code, emit_frame,
                 recv_frame, start_process, stop_process, upgrade, upgrade_request)


def echo(cid, data):
    """An ``echo`` emit expecting an answer."""
    return emit_frame('echo', data, cid)


class WireClient:
    """A WebSocket client that writes whatever bytes it is given and reads frames only
    when asked: ``send(bytes)``, ``next_frame() -> (opcode, payload)``, ``rest()``."""

    def __init__(self, server, rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(5)
        self.sock.connect(('127.0.0.1', server.port))
        self.reader = FrameReader(upgrade(self.sock))

    def send(self, data):
        self.sock.sendall(data)

    def next_frame(self):
        """The next server frame as (opcode, payload); EOFError when the stream ends."""
        return recv_frame(self.sock, self.reader)

    def handshake(self):
        self.send(client_frame('{"event":"#handshake","data":{},"cid":1}'))
        assert json.loads(self.next_frame()[1])['rid'] == 1

    def rest(self):
        """Every message (pongs left out) up to the end of the stream, and the close code
        (1006: none)."""
        messages = []
        try:
            while True:
                opcode, payload = self.next_frame()
                if opcode == OP_CLOSE:
                    return messages, close_code(payload)
                if opcode in (1, 2):
                    messages.append(payload)
        except (EOFError, OSError):
            return messages, 1006

    def close(self):
        self.sock.close()


@pytest.fixture
def wire():
    """``wire(server, rcvbuf=None) -> WireClient``; all closed at teardown."""
    made = []

    def connect(server, **kwargs):
        client = WireClient(server, **kwargs)
        made.append(client)
        return client
    yield connect
    for client in made:
        client.close()


def echo_server(make_server, options=None):
    server = make_server(options)
    server.on('connection', lambda socket, status: socket.on(
        'echo', lambda data, respond: respond(None, data)))
    return server


def closes_of(server):
    codes = []
    server.on('disconnection', lambda socket, code, data: codes.append(code))
    return codes


def test_endless_fragmented_message_gets_1009_while_another_client_is_served(make_server, wire, raw):
    """A 200 MB message in 64 KiB fragments: 1009 once it passes maxPayload (1 MiB), long
    before 200 MB; another client's echo is answered meanwhile."""
    server = echo_server(make_server)
    codes = closes_of(server)
    attacker, other = wire(server), raw(server)
    attacker.handshake()
    handshake(other)
    piece = b'x' * 65536
    attacker.send(client_frame(piece, fin=False))
    sent = len(piece)
    while sent < 200 * 1000 * 1000 and not codes:
        attacker.send(client_frame(piece, OP_CONT, fin=False))
        sent += len(piece)
        gevent.sleep(0.001)
    assert attacker.rest() == ([], 1009)
    assert codes == [1009]
    assert sent < 4 * 1024 * 1024
    other.send(json.dumps({'event': 'echo', 'data': 'still here', 'cid': 2}))
    assert recv_json(other) == {'rid': 2, 'data': 'still here'}


def test_tiny_fragments_count_towards_max_payload(make_server, wire):
    """2-byte fragments: the message is failed with 1009 once the fragments add up to more
    than maxPayload; the close frame reaches the client."""
    server = echo_server(make_server, {'maxPayload': 64 * 1024})
    attacker = wire(server)
    attacker.handshake()
    fragments = client_frame(b'xx', fin=False) + client_frame(b'xx', OP_CONT, fin=False) * (40 * 1024 - 1)
    attacker.send(fragments)
    assert attacker.rest() == ([], 1009)


FLOODER = '''
import socket, sys, time
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sock.sendall(sys.stdin.buffer.read())
frames = bytes.fromhex(sys.argv[2]) * 8000
deadline = time.time() + float(sys.argv[3])
try:
    while time.time() < deadline:
        sock.sendall(frames)
except OSError:
    pass
'''


@pytest.mark.parametrize('flood', [
    client_frame(b'x'),
    client_frame('{"event":"noop","data":1}'),
], ids=['1-byte frames', 'small events'])
def test_a_flood_from_one_socket_does_not_starve_another(make_server, raw, flood):
    """One socket sends as fast as it can; another client's echoes are still answered in
    well under 2 s each (measured by hand: a few ms)."""
    server = echo_server(make_server)
    start = upgrade_request() + client_frame('{"event":"#handshake","data":{},"cid":1}')
    flooder = start_process([sys.executable, '-c', FLOODER, str(server.port), flood.hex(), '6'],
                            popen=subprocess.Popen, stdin=subprocess.PIPE)
    try:
        flooder.stdin.write(start)
        flooder.stdin.close()
        wait_until(lambda: server.messages_received > 20000, timeout=8)
        client = raw(server)
        handshake(client)
        worst = 0
        for cid in range(2, 22):
            began = time.monotonic()
            client.send(json.dumps({'event': 'echo', 'data': cid, 'cid': cid}))
            assert recv_json(client, timeout=5) == {'rid': cid, 'data': cid}
            worst = max(worst, time.monotonic() - began)
            gevent.sleep(0.05)
        flooding = flooder.poll() is None
    finally:
        stop_process(flooder)
    assert flooding
    assert worst < 2


VIOLATIONS = {
    'rsv bit': (client_frame('{}', rsv=4), 1002),
    'unmasked frame': (client_frame('{}', mask=None), 1002),
    'reserved opcode': (client_frame(b'x', 3), 1002),
    'control frame over 125 bytes': (client_frame(b'x' * 126, OP_PING), 1002),
    'continuation without a start': (client_frame(b'x', OP_CONT), 1002),
    'invalid UTF-8': (client_frame(b'\xff\xfe'), 1007),
    'invalid UTF-8 in a fragment': (client_frame(b'ok', fin=False) + client_frame(b'\xed\xa0\x80', OP_CONT), 1007),
    'message over maxPayload': (client_frame(b'x' * 2000), 1009),
}


@pytest.mark.parametrize('violation', sorted(VIOLATIONS))
def test_messages_before_a_violation_are_answered_then_it_closes_with_its_code(
        make_server, wire, violation):
    """Valid emits and a violation in one write: every emit is answered, in order, then
    the close frame carries the violation's code."""
    server = echo_server(make_server, {'maxPayload': 1000})
    codes = closes_of(server)
    client = wire(server)
    client.handshake()
    bad, code = VIOLATIONS[violation]
    client.send(b''.join(echo(cid, cid) for cid in range(2, 52)) + client_frame(b'ping', OP_PING) + bad
                + echo(99, 'after the violation'))
    messages, close_code = client.rest()
    answers = [json.loads(payload) for payload in messages]
    assert answers == [{'rid': cid, 'data': cid} for cid in range(2, 52)]
    assert close_code == code
    wait_until(lambda: codes)
    assert codes == [code]


PUSH = 'x' * 65536


def push_until_closed(server, sockets, codes, limit=2000):
    """Send PUSH to the first socket until the server closes it; how many were sent."""
    pushed = 0
    deadline = time.monotonic() + 8
    while not codes and pushed < limit and time.monotonic() < deadline:
        sockets[0].send(PUSH)
        pushed += 1
        gevent.sleep(0.002)
    return pushed


def overflow(make_server, wire, options=None):
    """A handshaken client that never reads, pushed to until its server closes it with 1013
    at maxOutboundBytes (2 MiB): ``(client, messages pushed)``."""
    server = make_server(dict({'maxOutboundBytes': 2 * 1024 * 1024}, **(options or {})))
    sockets = []
    server.on('connection', lambda socket, status: sockets.append(socket))
    codes = closes_of(server)
    client = wire(server, rcvbuf=64 * 1024)
    client.handshake()
    wait_until(lambda: sockets)
    pushed = push_until_closed(server, sockets, codes)
    assert codes == [1013]
    client.server = server
    return client, pushed


def test_a_client_that_stops_reading_gets_its_1013_close_frame(make_server, wire):
    """The server pushes to a client that never reads: the socket is closed with 1013 at
    maxOutboundBytes; when the client reads at last, it gets intact frames, then the close
    frame with 1013 (not a bare end of stream)."""
    client, pushed = overflow(make_server, wire)
    gevent.sleep(3)  # slower than the closing handshake's timeout (2 s)
    messages, close_code = client.rest()
    assert close_code == 1013
    assert 0 < len(messages) < pushed
    assert all(payload == PUSH.encode() for payload in messages)


def test_a_slow_consumer_that_pauses_20_s_and_keeps_ponging_gets_its_1013(make_server, wire):
    """A client stops reading for 20 s (the default pingTimeout) while it keeps sending pongs:
    the server drops its backlog at maxOutboundBytes and keeps the connection, holding no
    data, until the client reads again and gets the 1013 close frame (not a reset)."""
    paused = time.monotonic()
    client, pushed = overflow(make_server, wire)
    while time.monotonic() - paused < 20:
        client.send(client_frame('#2'))
        gevent.sleep(min(1, 20 - (time.monotonic() - paused)))
    messages, close_code = client.rest()
    assert close_code == 1013
    assert 0 < len(messages) < pushed


def test_a_slow_consumer_that_goes_silent_is_dropped_at_the_pong_timeout(make_server, wire):
    """A client that neither reads nor sends anything after its backlog overflowed is
    dropped once pingTimeout has passed since its last input, as a silent client is."""
    silent = time.monotonic()
    client, _pushed = overflow(make_server, wire, {'pingTimeout': 2000, 'pingInterval': 1000})
    server = client.server
    wait_until(lambda: server.ws_connections == 0, timeout=6)
    assert time.monotonic() - silent < 4.5


def test_a_string_with_a_lone_surrogate_is_sent_like_javascript_would(make_server, raw):
    """socket.send of a str with lone surrogates (JSON can decode one) never raises: they
    become U+FFFD, as a JavaScript WebSocket sends them; a surrogate pair stays one character."""
    server = make_server()
    sockets = []
    server.on('connection', lambda socket, status: sockets.append(socket))
    client = raw(server)
    handshake(client)
    wait_until(lambda: sockets)
    sockets[0].send(json.loads('"a\\ud800b\\udfff"') + '\ud83d\ude00')
    sockets[0].send('still open')
    assert client.recv() == 'a\ufffdb\ufffd\U0001f600'
    assert client.recv() == 'still open'
