"""Idle plain connections have no reader greenlet: the reader ends after the idle
sweeps, input starts a new one, and every way of closing a greenlet-less connection still
runs the socket's close sequence once and releases the connection."""

import gc
import json

import gevent
import pytest
from greenlet import greenlet

from conftest import handshake, open_socket, recv_json, wait_until
from gsc.transport import WebSocketTransport
from wsraw import Closed

NO_PINGS = {'pingInterval': 3600 * 1000, 'pingTimeout': 7200 * 1000}
SWEEP = 0.1  # seconds between idle sweeps in these tests (1 s by default)


def reader_greenlets(server):
    """Live greenlets running a reader of ``server``'s connections (gc, not bookkeeping)."""
    found = 0
    for obj in gc.get_objects():
        if not issubclass(type(obj), greenlet) or obj.dead:  # type(): a dead weakproxy raises
            continue
        owner = getattr(getattr(obj, '_run', None), '__self__', None)
        if owner is server or owner is server.http_server or isinstance(owner, WebSocketTransport):
            found += 1
    return found


def idle_server(make_server, options=None):
    """A server whose idle sweeps run every ``SWEEP`` seconds."""
    server = make_server(dict(NO_PINGS, **(options or {})))
    server._idle_readers.interval = SWEEP
    return server


def record_closes(socket):
    """The ``close`` events of ``socket``, as (code, data) tuples."""
    closes = []
    socket.on('close', lambda code, data=None: closes.append(code))
    return closes


def wait_parked(server, count=1):
    """Until ``server`` has ``count`` connections and no reader greenlet."""
    wait_until(lambda: server.ws_connections == count and reader_greenlets(server) == 0, timeout=5)


def test_idle_connection_has_no_reader_and_still_answers(make_server, raw):
    server = idle_server(make_server)
    server.on('connection', lambda socket, status: socket.on(
        'echo', lambda data, respond: respond(None, data)))
    client, socket = open_socket(server, raw)
    wait_parked(server)
    socket.emit('hello', {'n': 1})
    assert recv_json(client) == {'event': 'hello', 'data': {'n': 1}}
    for cid in (10, 11):  # the reader resumes on input, and parks again after it
        client.send(json.dumps({'event': 'echo', 'data': cid, 'cid': cid}))
        assert recv_json(client) == {'rid': cid, 'data': cid}
        wait_parked(server)
    assert socket.state == socket.OPEN


def test_busy_connection_keeps_its_reader(make_server, raw):
    server = idle_server(make_server)
    server.on('connection', lambda socket, status: socket.on(
        'echo', lambda data, respond: respond(None, data)))
    client, _socket = open_socket(server, raw)
    for cid in range(1, 21):
        client.send(json.dumps({'event': 'echo', 'data': cid, 'cid': cid}))
        assert recv_json(client) == {'rid': cid, 'data': cid}
        gevent.sleep(SWEEP / 4)
    assert reader_greenlets(server) == 1


def test_handler_blocking_past_the_sweeps_is_not_cut_short(make_server, raw):
    server = idle_server(make_server)

    def slow(data, respond):
        gevent.sleep(SWEEP * 5)
        respond(None, 'done')
    server.on('connection', lambda socket, status: socket.on('slow', slow))
    client, _socket = open_socket(server, raw)
    client.send(json.dumps({'event': 'slow', 'data': None, 'cid': 5}))
    assert recv_json(client) == {'rid': 5, 'data': 'done'}
    wait_parked(server)


def test_pings_reach_an_idle_connection_and_pong_timeout_closes_it(make_server, raw):
    server = idle_server(make_server, {'pingInterval': 300, 'pingTimeout': 1500})
    client, socket = open_socket(server, raw)
    closes = record_closes(socket)
    wait_parked(server)
    assert client.recv(timeout=3) == '#1'
    client.send('#2')  # a pong: input wakes the reader, which parks again
    wait_parked(server)
    assert client.recv(timeout=3) == '#1'
    with pytest.raises(Closed):
        while True:
            client.recv(timeout=5)
    assert client.close_code == 4001
    wait_until(lambda: server.ws_connections == 0)
    assert closes == [4001]
    assert reader_greenlets(server) == 0


@pytest.mark.parametrize('how', ['disconnect', 'terminate', 'server close'])
def test_closing_a_parked_connection_closes_it_once(make_server, raw, how):
    server = idle_server(make_server)
    client, socket = open_socket(server, raw)
    closes = record_closes(socket)
    disconnections = []
    server.on('disconnection', lambda sock, code, data=None: disconnections.append(code))
    wait_parked(server)
    if how == 'disconnect':
        socket.disconnect(4321, 'bye')
        expected = 4321
    elif how == 'terminate':
        socket.terminate()
        expected = 1006
    else:
        server.close()
        expected = 1001
    with pytest.raises(Closed):
        while True:
            client.recv(timeout=5)
    wait_until(lambda: server.ws_connections == 0)
    gevent.sleep(SWEEP * 3)
    assert closes == [expected]
    assert disconnections == [expected]
    assert socket.socket.sock.closed
    assert reader_greenlets(server) == 0
    if how != 'terminate':
        assert client.close_code == expected


def test_handshake_timeout_closes_a_parked_connection(make_server, raw):
    server = idle_server(make_server, {'handshakeTimeout': 800})
    sockets = []
    server.on('handshake', sockets.append)
    client = raw(server)
    wait_until(lambda: sockets)
    closes = record_closes(sockets[0])
    wait_parked(server)
    with pytest.raises(Closed):
        while True:
            client.recv(timeout=5)
    assert client.close_code == 4005
    wait_until(lambda: server.ws_connections == 0)
    assert closes == [4005]


def test_peer_leaving_while_parked_is_a_1006_close(make_server, raw):
    server = idle_server(make_server)
    client, socket = open_socket(server, raw)
    closes = record_closes(socket)
    wait_parked(server)
    client.sock.close()
    wait_until(lambda: server.ws_connections == 0)
    assert closes == [1006]
    assert handshake(raw(server))['rid'] == 1  # the server still serves new connections
