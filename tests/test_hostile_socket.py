"""Hostile clients against one server socket: each test plays an attack from the
network with a raw WebSocket client and checks what a user of the server would see."""

import json
import logging
import time

import gevent
import pytest
from gevent import queue
from gevent.event import Event

from conftest import handshake, open_socket, recv_json, wait_until
from wsraw import Closed

from gsc.errors import SCError


def echo_server(make_server, options=None):
    """A server whose sockets answer ``echo`` with the data they got."""
    server = make_server(options)
    server.on('connection', lambda socket, status: socket.on(
        'echo', lambda data, respond: respond(None, data)))
    return server


def echo(cid, data='x'):
    """An ``echo`` call as a dict (for batches)."""
    return {'event': 'echo', 'data': data, 'cid': cid}


def close_code(client, timeout=5):
    """The code the server closed ``client`` with, skipping the messages before it."""
    with gevent.Timeout(timeout, AssertionError('the server did not close the connection')):
        while True:
            try:
                client.recv(timeout)
            except Closed as closed:
                return closed.code


def messages_until_close(client, timeout=5):
    """The decoded messages ``client`` gets before the server closes it."""
    messages = []
    with gevent.Timeout(timeout, AssertionError('the server did not close the connection')):
        while True:
            try:
                messages.append(json.loads(client.recv(timeout)))
            except Closed:
                return messages


# -- 1. batches ------------------------------------------------------------------


def test_a_batch_over_max_batch_packets_is_refused_with_1009(make_server, raw):
    """A batch of maxBatchPackets + 1 packets closes with 1009 and a reason; none is handled."""
    server = echo_server(make_server, {'maxBatchPackets': 10})
    client = raw(server)
    handshake(client)
    client.send(json.dumps([echo(cid) for cid in range(2, 13)]))
    messages = messages_until_close(client)
    assert messages == [{'event': '#disconnect', 'data': {
        'code': 1009, 'data': 'A batch of 11 packets exceeds maxBatchPackets (10)'}}]
    assert client.close_code == 1009
    assert 'maxBatchPackets' in client.close_reason
    wait_until(lambda: server.clients_count == 0)


def test_a_batch_of_max_batch_packets_is_answered_in_full(make_server, raw):
    """The limit itself is allowed: every packet of the batch is answered, in order."""
    server = echo_server(make_server, {'maxBatchPackets': 100})
    client = raw(server)
    handshake(client)
    client.send(json.dumps([echo(cid, cid) for cid in range(2, 102)]))
    assert [recv_json(client)['data'] for _ in range(100)] == list(range(2, 102))


def test_other_clients_are_served_while_a_batch_is_handled(make_server, raw):
    """A long batch yields between packets: another client's echo is answered before the
    batch ends (each ``work`` packet blocks the process for 2 ms, like CPU work)."""
    server = echo_server(make_server)
    handled = []
    started = Event()

    def work(data, respond):
        handled.append(data)
        started.set()
        time.sleep(0.002)
        respond(None, data)
    server.on('connection', lambda socket, status: socket.on('work', work))
    busy = raw(server)
    other = raw(server)
    handshake(busy)
    handshake(other)
    count = 300
    busy.send(json.dumps([{'event': 'work', 'data': n, 'cid': n + 2} for n in range(count)]))
    assert started.wait(5)
    other.send(json.dumps(echo(2, 'quick')))
    assert recv_json(other) == {'rid': 2, 'data': 'quick'}
    assert len(handled) < count
    assert [recv_json(busy)['data'] for _ in range(count)] == list(range(count))


@pytest.mark.parametrize('slow', [False, True])
def test_a_batch_starting_with_handshake_handles_the_rest_after_it(make_server, raw, slow):
    """``[#handshake, echo, #subscribe]``: the handshake is answered first, then the rest in
    order, with the socket open (SocketCluster awaits the handshake before the next packet),
    also when a handshake middleware makes the handshake wait."""
    server = echo_server(make_server)
    if slow:
        server.add_middleware(server.MIDDLEWARE_HANDSHAKE_SC, lambda req: gevent.sleep(0.1))
    client = raw(server)
    client.send(json.dumps([{'event': '#handshake', 'data': {}, 'cid': 1}, echo(2, 'after'),
                            {'event': '#subscribe', 'data': {'channel': 'c'}, 'cid': 3}]))
    assert recv_json(client)['rid'] == 1
    assert recv_json(client) == {'rid': 2, 'data': 'after'}
    assert recv_json(client) == {'rid': 3}


def test_a_batch_with_the_handshake_second_is_refused_with_4009(make_server, raw):
    """Strict handshake: nothing but the handshake comes first, even inside a batch."""
    server = echo_server(make_server)
    client = raw(server)
    client.send(json.dumps([echo(2), {'event': '#handshake', 'data': {}, 'cid': 1}]))
    assert messages_until_close(client) == [{'event': '#disconnect', 'data': {'code': 4009}}]
    assert client.close_code == 4009


# -- 7b. frames that follow a #handshake still in progress --------------------------


def slow_handshake_server(make_server, release, options=None):
    """An echo server whose handshake middleware waits for ``release`` (at most 5 s)."""
    server = echo_server(make_server, options)

    def slow(req, next_):
        release.wait(5)
        next_()
    server.add_middleware(server.MIDDLEWARE_HANDSHAKE_SC, slow)
    return server


def test_frames_after_handshake_wait_for_it_and_keep_their_order(make_server, raw):
    """With a slow handshake middleware, an echo and a #subscribe sent right after
    #handshake are handled after it, in order, and succeed."""
    release = Event()
    server = slow_handshake_server(make_server, release)
    client = raw(server)
    client.send(json.dumps({'event': '#handshake', 'data': {}, 'cid': 1}))
    client.send(json.dumps(echo(2, 'first')))
    client.send(json.dumps({'event': '#subscribe', 'data': {'channel': 'c'}, 'cid': 3}))
    client.send(json.dumps(echo(4, 'last')))
    with pytest.raises(queue.Empty):
        client.recv(timeout=0.2)
    release.set()
    answers = [recv_json(client) for _ in range(4)]
    assert answers[0]['rid'] == 1 and 'id' in answers[0]['data']
    assert answers[1:] == [{'rid': 2, 'data': 'first'}, {'rid': 3}, {'rid': 4, 'data': 'last'}]


def test_too_many_frames_before_the_handshake_completes_close_with_1009(make_server, raw):
    """The frames that wait for the handshake are bounded (maxBatchPackets packets)."""
    release = Event()
    server = slow_handshake_server(make_server, release, {'maxBatchPackets': 5})
    client = raw(server)
    client.send(json.dumps({'event': '#handshake', 'data': {}, 'cid': 1}))
    for cid in range(2, 9):
        client.send(json.dumps(echo(cid)))
    assert close_code(client) == 1009
    release.set()
    wait_until(lambda: server.clients_count == 0 and server.pending_clients_count == 0)


# -- 2. no packet leaves a connection open and unserved -------------------------------


@pytest.mark.parametrize('data', [[1], {'code': [1]}, {'code': 'x'}, {'code': {'a': 1}},
                                  {'code': 1.5}, {'code': True}, {'code': 4444, 'data': [1]}])
def test_a_malformed_disconnect_closes_the_connection(make_server, raw, data):
    """``#disconnect`` with odd data or a code that is not a number still ends the connection."""
    server = echo_server(make_server)
    client = raw(server)
    handshake(client)
    client.send(json.dumps({'event': '#disconnect', 'data': data}))
    close_code(client)
    wait_until(lambda: server.clients_count == 0)


def test_a_failure_while_handling_a_packet_closes_with_1011(make_server, raw):
    """Any exception escaping the handling of a packet (here a raising ``raw`` listener)
    closes the connection with 1011 and releases it: the socket leaves the server."""
    server = make_server()
    closes = []
    server.on('disconnection', lambda socket, code, data: closes.append(code))
    server.on('connection', lambda socket, status: socket.on('raw', lambda frame: 1 / 0))
    client = raw(server)
    handshake(client)
    client.send('not a packet')
    assert close_code(client) == 1011
    wait_until(lambda: closes == [1011] and server.clients_count == 0)


# -- 3. the reply path survives an encoding failure ------------------------------------


def test_an_unencodable_reply_becomes_an_error_reply(make_server, raw, caplog):
    """respond(None, <unencodable>) answers with an error, marks the reply sent, logs one line."""
    server = make_server()
    sent_flags = []

    def answer(data, respond):
        respond(None, object())
        sent_flags.append(respond.sent)
    server.on('connection', lambda socket, status: socket.on('answer', answer))
    client = raw(server)
    handshake(client)
    with caplog.at_level(logging.WARNING, logger='gsc.core.protocol'):
        client.send(json.dumps({'event': 'answer', 'cid': 2}))
        assert recv_json(client) == {'rid': 2, 'error': {
            'message': 'Server failed to encode the response', 'name': 'Error'}}
    assert sent_flags == [True]
    assert len([r for r in caplog.records if r.name == 'gsc.core.protocol']) == 1


# -- 4. a handler's unexpected exception does not leak ---------------------------------


class LeakyError(Exception):
    """An exception with details a client must not see."""

    def __init__(self):
        super().__init__('SELECT * FROM users WHERE password = %s')
        self.query_params = ['hunter2']
        self.path = '/srv/app/secrets.py'


def leaky_server(make_server, options=None):
    """A server with handlers that raise or pass errors in every way."""
    server = make_server(options)

    def on_connection(socket, status):
        socket.on('leaky', lambda data, respond: (_ for _ in ()).throw(LeakyError()))
        socket.on('passed', lambda data, respond: respond(LeakyError()))
        socket.on('sc', lambda data, respond: (_ for _ in ()).throw(
            SCError('Not allowed', code=42)))
    server.on('connection', on_connection)
    return server


def test_a_raising_handler_gives_the_client_a_generic_error(make_server, raw, caplog):
    """The client sees a generic error; the traceback is logged once on the server."""
    server = leaky_server(make_server)
    client = raw(server)
    handshake(client)
    with caplog.at_level(logging.WARNING):
        client.send(json.dumps({'event': 'leaky', 'cid': 2}))
        answer = recv_json(client)
    assert answer == {'rid': 2, 'error': {'message': 'Internal server error', 'name': 'Error'}}
    tracebacks = [r for r in caplog.records if r.exc_info and r.exc_info[0] is LeakyError]
    assert len(tracebacks) == 1


def test_errors_a_handler_means_to_send_keep_their_fields(make_server, raw):
    """An error passed to respond, or a raised SCError, keeps its name, message and fields."""
    server = leaky_server(make_server)
    client = raw(server)
    handshake(client)
    client.send(json.dumps({'event': 'passed', 'cid': 2}))
    client.send(json.dumps({'event': 'sc', 'cid': 3}))
    assert recv_json(client)['error']['path'] == '/srv/app/secrets.py'
    assert recv_json(client) == {'rid': 3, 'error': {'message': 'Not allowed', 'name': 'Error', 'code': 42}}


def test_the_dev_environment_shows_the_message_but_no_fields(make_server, raw):
    """environment 'dev' (a cluster's default): class name and message, still no attributes."""
    server = leaky_server(make_server, {'environment': 'dev'})
    client = raw(server)
    handshake(client)
    client.send(json.dumps({'event': 'leaky', 'cid': 2}))
    assert recv_json(client) == {'rid': 2, 'error': {
        'message': 'SELECT * FROM users WHERE password = %s', 'name': 'LeakyError'}}


# -- 5. hostile error replies to the server's own calls ---------------------------------


@pytest.mark.parametrize('error', [{'args': 5}, {'__class__': 'y'}, {'name': [1], 'message': {'a': 1}},
                                   {'with_traceback': 1, '_x': 2, 'message': 'm', 'code': 3}])
def test_the_emit_callback_fires_whatever_error_the_client_sends(make_server, raw, error):
    """A client's error reply never stops the server's callback (and is not a timeout)."""
    server = make_server({'ackTimeout': 8000})
    client, socket = open_socket(server, raw)
    results = []
    socket.emit('ask', 1, lambda err, data: results.append(err))
    request = recv_json(client)
    client.send(json.dumps({'rid': request['cid'], 'error': error}))
    wait_until(lambda: results, timeout=3)
    assert isinstance(results[0], SCError) and results[0].name != 'TimeoutError'
    assert socket.state == 'open'


# -- 6. channel names are bounded ------------------------------------------------------


def test_channel_names_over_max_channel_name_length_are_refused(make_server, raw):
    """subscribe, publish and unsubscribe refuse a name of maxChannelNameLength + 1
    characters with a BrokerError that does not echo it; the exchange never sees it."""
    server = make_server({'maxChannelNameLength': 16})
    subscriptions = []
    server.on('subscription', lambda socket, channel, request: subscriptions.append(channel))
    client = raw(server)
    handshake(client)
    long_name = 'c' * 17
    client.send(json.dumps({'event': '#subscribe', 'data': {'channel': long_name}, 'cid': 2}))
    client.send(json.dumps({'event': '#publish', 'data': {'channel': long_name, 'data': 1}, 'cid': 3}))
    client.send(json.dumps({'event': '#unsubscribe', 'data': long_name, 'cid': 4}))
    client.send(json.dumps({'event': '#subscribe', 'data': {'channel': 'c' * 16}, 'cid': 5}))
    answers = [recv_json(client) for _ in range(4)]
    for answer in answers[:3]:
        assert answer['error']['name'] == 'BrokerError'
        assert 'longer than 16 characters' in answer['error']['message']
        assert long_name not in answer['error']['message']
    assert answers[3] == {'rid': 5}
    assert subscriptions == ['c' * 16]


# -- 7a. undefined and null data ------------------------------------------------------


def test_an_echo_keeps_undefined_and_null_apart(make_server, raw):
    """No data in: no data out; null in: null out; the handler sees None for both."""
    server = make_server()
    seen = []

    def on_echo(data, respond):
        seen.append(data)
        respond(None, data)
    server.on('connection', lambda socket, status: socket.on('echo', on_echo))
    client = raw(server)
    handshake(client)
    client.send('{"event":"echo","cid":2}')
    client.send('{"event":"echo","data":null,"cid":3}')
    assert recv_json(client) == {'rid': 2}
    assert recv_json(client) == {'rid': 3, 'data': None}
    assert seen == [None, None]
