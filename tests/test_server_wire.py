"""The server side of the wire protocol, seen by a raw WebSocket client (X-01..X-38)."""

import json
import time

import gevent
import pytest
from gevent import queue

from conftest import handshake, open_socket, recv_json, subscribe_then_leave, wait_until
from wsraw import Closed, HandshakeRefused


def events_of(server, *names):
    """Record ``names`` events of ``server`` as (name, args) tuples."""
    seen = []
    for name in names:
        server.on(name, lambda *args, _name=name: seen.append((_name, args)))
    return seen


def echo_server(make_server, options=None):
    server = make_server(dict({'authKey': 'testkey'}, **(options or {})))
    server.on('connection', lambda socket, status: socket.on(
        'echo', lambda data, respond: respond(None, data)))
    return server


def test_handshake_answer_has_id_ping_timeout_and_auth_state(make_server, raw):
    """X-01, B-058: the answer carries a 20-char id, pingTimeout and isAuthenticated, in that order."""
    server = make_server()
    connections = events_of(server, 'connection')
    client = raw(server)
    answer = client.recv and handshake(client)
    assert list(answer['data']) == ['id', 'pingTimeout', 'isAuthenticated']
    assert answer['rid'] == 1 and len(answer['data']['id']) == 20
    assert answer['data']['pingTimeout'] == 20000 and answer['data']['isAuthenticated'] is False
    wait_until(lambda: connections)
    socket, status = connections[0][1]
    assert socket.id == answer['data']['id'] and socket.state == 'open'
    assert server.clients_count == 1 and server.pending_clients_count == 0


def test_handshake_without_cid_opens_the_socket_without_answer(make_server, raw):
    """X-02."""
    server = echo_server(make_server)
    client = raw(server)
    client.send('{"event":"#handshake"}')
    client.send('{"event":"echo","data":5,"cid":2}')
    assert recv_json(client) == {'rid': 2, 'data': 5}


def test_emits_in_the_connection_handler_precede_the_handshake_answer(make_server, raw):
    """X-06, B-001."""
    server = make_server()
    server.on('connection', lambda socket, status: socket.emit('first', 'This is the first event'))
    client = raw(server)
    client.send('{"event":"#handshake","data":{},"cid":1}')
    assert recv_json(client) == {'event': 'first', 'data': 'This is the first event'}
    assert recv_json(client)['rid'] == 1


def test_responses_errors_and_silence(make_server, raw):
    """X-07: respond(null, d), respond(), respond(err, d), respond('string'), no handler -> nothing."""
    server = make_server()

    class CustomError(Exception):
        pass

    def on_connection(socket, status):
        socket.on('data', lambda data, respond: respond(None, {'x': [1, 2]}))
        socket.on('empty', lambda data, respond: respond())
        socket.on('fail', lambda data, respond: respond(CustomError('bad thing'), {'partial': True}))
        socket.on('text', lambda data, respond: respond('string error'))
        socket.on('never', lambda data, respond: None)
    server.on('connection', on_connection)
    client = raw(server)
    handshake(client)
    for cid, event in enumerate(('never', 'unhandled', 'data', 'empty', 'fail', 'text'), start=2):
        client.send(json.dumps({'event': event, 'cid': cid}))
    assert recv_json(client) == {'rid': 4, 'data': {'x': [1, 2]}}
    assert recv_json(client) == {'rid': 5}
    assert recv_json(client) == {'rid': 6, 'error': {'message': 'bad thing', 'name': 'CustomError'},
                                 'data': {'partial': True}}
    assert recv_json(client) == {'rid': 7, 'error': 'string error'}
    with pytest.raises(queue.Empty):
        client.recv(timeout=0.3)


def test_inbound_batches_are_answered_one_by_one(make_server, raw):
    """X-09."""
    server = echo_server(make_server)
    client = raw(server)
    handshake(client)
    client.send('[{"event":"echo","data":1,"cid":2},{"event":"echo","data":2,"cid":3}]')
    assert recv_json(client) == {'rid': 2, 'data': 1}
    assert recv_json(client) == {'rid': 3, 'data': 2}


def test_raw_frames_reach_the_raw_event(make_server, raw):
    """X-10: 'hello raw', '{"foo":1}', '#1', '"#2"', '123' are raw; '#2' is not."""
    server = make_server()
    raws = []
    server.on('connection', lambda socket, status: socket.on('raw', raws.append))
    client = raw(server)
    handshake(client)
    for frame in ('hello raw', '{"foo":1}', '#1', '"#2"', '123', '#2'):
        client.send(frame)
    wait_until(lambda: len(raws) == 5)
    gevent.sleep(0.05)
    assert raws == ['hello raw', '{"foo":1}', '#1', '"#2"', '123']


def test_local_event_names_and_unhandled_reserved_events_get_no_answer(make_server, raw):
    """X-11."""
    server = echo_server(make_server)
    client = raw(server)
    handshake(client)
    for cid, event in enumerate(('message', 'connect', '#foo', '#removeAuthToken'), start=2):
        client.send(json.dumps({'event': event, 'data': 1, 'cid': cid}))
    client.send('{"event":"echo","data":"after","cid":9}')
    assert recv_json(client) == {'rid': 9, 'data': 'after'}


def test_strict_handshake_closes_with_4009(make_server, raw):
    """anything but #handshake first closes the socket with 4009."""
    server = make_server()
    aborts = events_of(server, 'connectionAbort')
    client = raw(server)
    client.send('{"event":"echo","data":1,"cid":1}')
    assert recv_json(client) == {'event': '#disconnect', 'data': {'code': 4009}}
    with pytest.raises(Closed) as closed:
        client.recv()
    assert closed.value.code == 4009
    wait_until(lambda: aborts)
    assert aborts[0][1][1] == 4009


def test_handshake_timeout_disconnects_with_4005(make_server, raw):
    """X-23."""
    server = make_server({'handshakeTimeout': 200})
    aborts = events_of(server, 'connectionAbort', 'warning')
    client = raw(server)
    assert recv_json(client) == {'event': '#disconnect', 'data': {'code': 4005}}
    with pytest.raises(Closed) as closed:
        client.recv()
    assert closed.value.code == 4005
    wait_until(lambda: len(aborts) >= 2)
    assert aborts[0][0] == 'connectionAbort' and aborts[0][1][1] == 4005
    assert str(aborts[1][1][0]) == 'Did not receive #handshake from client before timeout'


def test_bad_path_gets_400(make_server, raw):
    """X-24: the path must match exactly."""
    server = make_server()
    for path in ('/foo/', '/socketcluster'):
        with pytest.raises(HandshakeRefused) as refused:
            raw(server, path=path)
        assert refused.value.status == 400


def test_pings_keep_a_replying_client_and_close_a_silent_one_with_4001(make_server, raw):
    """X-25, B-074: #1 every pingInterval; nothing received for pingTimeout -> 4001."""
    server = make_server({'pingInterval': 100, 'pingTimeout': 350})
    warnings = events_of(server, 'warning')
    replying = raw(server)
    handshake(replying)
    silent = raw(server)
    handshake(silent)
    deadline = time.time() + 0.8
    pings = 0
    while time.time() < deadline:
        try:
            frame = replying.recv(timeout=0.2)
        except queue.Empty:
            continue
        if frame == '#1':
            pings += 1
            replying.send('#2')
    assert pings >= 5
    assert silent.recv() == '#1'
    with pytest.raises(Closed) as closed:
        while True:
            silent.recv()
    assert closed.value.code == 4001
    assert any(str(w[1][0]) == 'Client pong timed out' for w in warnings)
    replying.send('{"event":"#handshake"}')  # ignored: only the first handshake counts
    assert server.clients_count == 1


def test_ping_timeout_disabled_sends_no_pings(make_server, raw):
    """B-075."""
    server = make_server({'pingInterval': 100, 'pingTimeout': 200, 'pingTimeoutDisabled': True})
    client = raw(server)
    handshake(client)
    with pytest.raises(queue.Empty):
        client.recv(timeout=0.5)
    assert server.clients_count == 1


def test_server_disconnect_sends_the_code_and_reason_in_a_packet(make_server, raw):
    """X-21, B-072: #disconnect packet, close frame with the code and an empty reason."""
    server = make_server()
    seen = events_of(server, 'disconnection', 'warning')
    server.on('connection', lambda socket, status: socket.on(
        'leave', lambda data, respond: socket.disconnect(4321, 'custom reason')))
    client = raw(server)
    handshake(client)
    client.send('{"event":"leave"}')
    assert recv_json(client) == {'event': '#disconnect', 'data': {'code': 4321, 'data': 'custom reason'}}
    with pytest.raises(Closed) as closed:
        client.recv()
    assert (closed.value.code, closed.value.reason) == (4321, '')
    wait_until(lambda: len(seen) >= 2)
    assert seen[0][0] == 'disconnection' and seen[0][1][1:] == (4321, 'custom reason')
    assert str(seen[1][1][0]) == 'Socket connection closed with status code 4321 and reason: custom reason'
    assert server.clients_count == 0 and server.pending_clients_count == 0


def test_client_disconnect_packet_is_the_close(make_server, raw):
    """X-22: the server sees the client's code and reason at once, and closes with that code."""
    server = make_server()
    seen = events_of(server, 'disconnection')
    client = raw(server)
    handshake(client)
    client.send('{"event":"#disconnect","data":{"code":4444,"data":"client reason"}}')
    wait_until(lambda: seen)
    assert seen[0][1][1:] == (4444, 'client reason')
    with pytest.raises(Closed) as closed:
        client.recv()
    assert closed.value.code == 4444


def test_close_events_come_in_the_documented_order(make_server, raw):
    """B-062, B-066: unsubscribe, disconnection, closure, disconnect, close."""
    server = make_server()
    order = []
    server.on('disconnection', lambda *a: order.append('disconnection'))
    server.on('closure', lambda socket, *a: order.append('closure:' + socket.state))
    server.on('unsubscription', lambda *a: order.append('unsubscription'))

    def on_connection(socket, status):
        socket.on('unsubscribe', lambda channel: order.append('unsubscribe:' + channel))
        socket.on('disconnect', lambda code, data: order.append('disconnect'))
        socket.on('close', lambda code, data: order.append('close'))
    server.on('connection', on_connection)
    subscribe_then_leave(server, raw)
    wait_until(lambda: 'close' in order)
    assert order == ['unsubscribe:foo', 'unsubscription', 'disconnection', 'closure:closed',
                     'disconnect', 'close']


def test_oversized_frames_close_with_1009_and_others_keep_working(make_server, raw):
    """maxPayload; the worker keeps serving other sockets."""
    server = echo_server(make_server, {'maxPayload': 1000})
    closes = events_of(server, 'disconnection')
    big, other = raw(server), raw(server)
    handshake(big)
    handshake(other)
    big.send(json.dumps({'event': 'echo', 'data': 'x' * 2000, 'cid': 2}))
    with pytest.raises(Closed) as closed:
        big.recv()
    assert closed.value.code == 1009
    wait_until(lambda: closes)
    assert closes[0][1][1] == 1009
    other.send('{"event":"echo","data":"still here","cid":2}')
    assert recv_json(other) == {'rid': 2, 'data': 'still here'}


def test_garbage_never_disturbs_the_server(make_server, raw):
    """Bad input: invalid JSON, wrong types, unknown rids, binary garbage get no answer and no crash."""
    server = echo_server(make_server)
    client = raw(server)
    handshake(client)
    for frame in ('{"event":', '[1,2,{"rid":"nope"}]', '{"rid":99}', '{"event":{"x":1},"cid":5}',
                  '{"event":"echo","cid":{"weird":1}}', '[[[]]]', 'null', '{"event":"#subscribe","data":5,"cid":6}'):
        client.send(frame)
    client.send(b'\x00\xff\xfe garbage')
    client.send('{"event":"echo","data":"ok","cid":7}')
    answers = [recv_json(client) for _ in range(3)]
    assert answers[0] == {'rid': {'weird': 1}}  # no data in, no data out (undefined)
    assert answers[1]['rid'] == 6 and answers[1]['error']['name'] == 'BrokerError'
    assert answers[2] == {'rid': 7, 'data': 'ok'}


def test_emit_middleware_errors_and_silent_blocks(make_server, raw):
    """X-08: plain error -> message only + warning; next(True) -> SilentMiddlewareBlockedError, no warning."""
    server = echo_server(make_server)
    warnings = events_of(server, 'warning')

    def middleware(req, next_):
        if req.data == 'plain':
            next_(Exception('plain error'))
        elif req.data == 'silent':
            next_(True)
        else:
            req.data = 'rewritten ' + req.data
            next_()
    server.add_middleware(server.MIDDLEWARE_EMIT, middleware)
    client = raw(server)
    handshake(client)
    client.send('{"event":"echo","data":"plain","cid":8}')
    client.send('{"event":"echo","data":"silent","cid":9}')
    client.send('{"event":"echo","data":"fine","cid":10}')
    assert recv_json(client) == {'rid': 8, 'error': {'message': 'plain error'}}
    assert recv_json(client) == {'rid': 9, 'error': {
        'message': 'Action was silently blocked by emit middleware',
        'name': 'SilentMiddlewareBlockedError', 'type': 'emit'}}
    assert recv_json(client) == {'rid': 10, 'data': 'rewritten fine'}
    assert [str(w[1][0]) for w in warnings] == ['plain error']


def test_unknown_middleware_type_is_refused(make_server):
    """A middleware type the server does not know is refused with SocketCluster's error."""
    server = make_server()
    with pytest.raises(Exception, match='Middleware type "nope" is not supported'):
        server.add_middleware('nope', lambda req, next_: next_())


def test_handshake_sc_rejections(make_server, raw):
    """X-26, B-078..B-080: default 4008, next(err, 4501), err.statusCode, next(True)."""
    server = make_server()

    class TooLazyHandshakeError(Exception):
        pass

    def middleware(req, next_):
        query = req.socket.request.query
        if query == 'code':
            next_(TooLazyHandshakeError('too lazy'), 4501)
        elif query == 'status':
            err = TooLazyHandshakeError('status')
            err.statusCode = 4600
            next_(err)
        elif query == 'silent':
            next_(True)
        else:
            next_(TooLazyHandshakeError('SC handshake failed because the server was too lazy'))
    server.add_middleware(server.MIDDLEWARE_HANDSHAKE_SC, middleware)
    aborts = events_of(server, 'connectionAbort', 'connection')
    for query, code, name in (('', 4008, 'TooLazyHandshakeError'), ('code', 4501, 'TooLazyHandshakeError'),
                              ('status', 4600, 'TooLazyHandshakeError'),
                              ('silent', 4008, 'SilentMiddlewareBlockedError')):
        client = raw(server, path='/socketcluster/?' + query)
        answer = handshake(client)
        assert answer['error']['name'] == name and answer['data'] == {'code': code}
        assert recv_json(client) == {'event': '#disconnect', 'data': {'code': code}}
        with pytest.raises(Closed) as closed:
            client.recv()
        assert closed.value.code == code
    wait_until(lambda: len(aborts) == 4)
    assert all(name == 'connectionAbort' for name, _ in aborts)


def test_origins_and_handshake_ws_middleware(make_server, raw):
    """X-27: disallowed origin -> 403 + warning; handshakeWS error -> 401; allowed origin passes."""
    server = make_server({'origins': 'example.com:80'})
    warnings = events_of(server, 'warning')
    with pytest.raises(HandshakeRefused) as refused:
        raw(server, headers={'Origin': 'http://evil.com'})
    assert refused.value.status == 403
    assert str(warnings[0][1][0]) == 'Failed to authorize socket handshake - Invalid origin: http://evil.com'
    handshake(raw(server, headers={'Origin': 'http://example.com'}))

    def no_ws(req, next_):
        next_(Exception('no ws') if 'deny' in req.url else None)
    server.add_middleware(server.MIDDLEWARE_HANDSHAKE_WS, no_ws)
    with pytest.raises(HandshakeRefused) as refused:
        raw(server, path='/socketcluster/?deny', headers={'Origin': 'http://example.com'})
    assert refused.value.status == 401 and refused.value.body == b'no ws'


def test_subscribe_unsubscribe_publish_and_kick_out(make_server, raw):
    """X-12, X-14, X-16, X-17: the pub/sub packets of one socket."""
    server = make_server()
    client, server_socket = open_socket(server, raw)
    client.send('{"event":"#subscribe","data":{"channel":"foo"},"cid":2}')
    client.send('{"event":"#subscribe","data":{"channel":"foo"},"cid":3}')
    client.send('{"event":"#subscribe","data":"strchan","cid":4}')
    client.send('{"event":"#subscribe","data":{"channel":"b1","batch":true},"cid":5}')
    assert [recv_json(client) for _ in range(3)] == [{'rid': 2}, {'rid': 3}, {'rid': 4}]
    assert recv_json(client) == [{'rid': 5}]
    client.send('{"event":"#publish","data":{"channel":"foo","data":"hi"},"cid":8}')
    assert recv_json(client) == {'event': '#publish', 'data': {'channel': 'foo', 'data': 'hi'}}
    assert recv_json(client) == {'rid': 8}
    client.send('{"event":"#unsubscribe","data":"nope","cid":13}')
    error = recv_json(client)['error']
    assert error['name'] == 'BrokerError' and error['message'] == (
        'Failed to unsubscribe socket from the nope channel - Socket %s tried to unsubscribe '
        'from a channel which it is not subscribed to' % server_socket.id)
    server_socket.kick_out('foo', 'kicked!')
    assert recv_json(client) == {'event': '#kickOut', 'data': {'message': 'kicked!', 'channel': 'foo'}}
    server_socket.kick_out(None, 'kicked all')
    kicked = sorted(recv_json(client)['data']['channel'] for _ in range(2))
    assert kicked == ['b1', 'strchan']
    assert server_socket.channel_subscriptions_count == 0
    server.exchange.publish('foo', 'after kick')
    client.send('{"event":"#subscribe","data":{"channel":"x"},"cid":20}')
    assert recv_json(client) == {'rid': 20}


def test_subscribe_middleware_limit_and_invalid_channels(make_server, raw):
    """X-13, X-28, X-35, B-065."""
    server = make_server({'socketChannelLimit': 2})

    class BlockedSubError(Exception):
        pass

    def middleware(req, next_):
        if req.channel == 'blocked':
            next_(BlockedSubError('nope'))
        elif req.channel == 'quiet':
            next_(True)
        else:
            next_()
    server.add_middleware(server.MIDDLEWARE_SUBSCRIBE, middleware)
    client, server_socket = open_socket(server, raw)
    client.send('{"event":"#subscribe","data":{"channel":"blocked"},"cid":6}')
    assert recv_json(client) == {'rid': 6, 'error': {'message': 'nope', 'name': 'BlockedSubError'}}
    client.send('{"event":"#subscribe","data":{"channel":"quiet"},"cid":7}')
    assert recv_json(client)['error']['type'] == 'subscribe'
    client.send('{"event":"#subscribe","data":null,"cid":8}')
    assert recv_json(client)['error']['message'] == (
        'Failed to subscribe socket to the undefined channel - Socket %s provided an invalid channel name'
        % server_socket.id)
    for cid, channel in ((9, 'a'), (10, 'b')):
        client.send(json.dumps({'event': '#subscribe', 'data': {'channel': channel}, 'cid': cid}))
        assert recv_json(client) == {'rid': cid}
    client.send('{"event":"#subscribe","data":{"channel":"c"},"cid":11}')
    assert recv_json(client)['error']['message'] == (
        'Failed to subscribe socket to the c channel - Socket %s tried to exceed the channel '
        'subscription limit of 2' % server_socket.id)
    invalid = ['{"event":"#publish","data":null,"cid":12}',
               '{"event":"#publish","data":{"channel":{"hello":123}},"cid":13}',
               '{"event":"#unsubscribe","data":[null],"cid":14}']
    for frame in invalid:
        client.send(frame)
    messages = [recv_json(client)['error']['message'] for _ in invalid]
    assert messages == [
        'Socket %s tried to publish to an invalid undefined channel' % server_socket.id,
        'Socket %s tried to publish to an invalid [object Object] channel' % server_socket.id,
        'Failed to unsubscribe socket from the  channel - Socket %s tried to unsubscribe from an '
        'invalid channel name' % server_socket.id]


def test_subscribe_before_handshake_is_refused(make_server, raw):
    """B-064 (with strictHandshake off, as in 14.3.1)."""
    server = make_server({'strictHandshake': False})
    subscriptions = events_of(server, 'subscription')
    client = raw(server)
    client.send('{"event":"#subscribe","data":{"channel":"someChannel"},"cid":2}')
    answer = recv_json(client)
    assert answer['error']['name'] == 'InvalidActionError'
    assert not subscriptions


def test_publish_in_ack_data_and_client_publish_disabled(make_server, raw):
    """X-15, X-34."""
    server = make_server()

    def publish_in(req, next_):
        req.ackData = {'ok': 1}
        next_()
    server.add_middleware(server.MIDDLEWARE_PUBLISH_IN, publish_in)
    client = raw(server)
    handshake(client)
    client.send('{"event":"#publish","data":{"channel":"c","data":1},"cid":10}')
    assert recv_json(client) == {'rid': 10, 'data': {'ok': 1}}
    closed = make_server({'allowClientPublish': False})
    client = raw(closed)
    handshake(client)
    client.send('{"event":"#publish","data":{"channel":"c","data":1},"cid":3}')
    assert recv_json(client)['error'] == {'message': 'Client publish feature is disabled',
                                          'name': 'InvalidActionError'}


def test_publish_out_middleware_filters_and_rewrites_per_socket(make_server, raw):
    """X-36."""
    server = make_server()

    def publish_out(req, next_):
        if req.socket.request.query == 'blocked':
            next_(Exception('not for you'))
        else:
            req.data = 'for ' + req.socket.request.query
            next_()
    server.add_middleware(server.MIDDLEWARE_PUBLISH_OUT, publish_out)
    clients = {}
    for name in ('alice', 'blocked'):
        clients[name] = raw(server, path='/socketcluster/?' + name)
        handshake(clients[name])
        clients[name].send('{"event":"#subscribe","data":{"channel":"c"},"cid":2}')
        assert recv_json(clients[name]) == {'rid': 2}
    clients['blocked'].send('{"event":"#publish","data":{"channel":"c","data":"x"},"cid":3}')
    assert recv_json(clients['blocked']) == {'rid': 3}
    assert recv_json(clients['alice']) == {'event': '#publish', 'data': {'channel': 'c', 'data': 'for alice'}}


def test_server_emit_with_ack_answer_error_and_timeout(make_server, raw):
    """X-20."""
    server = make_server({'ackTimeout': 200})
    results = []
    client, socket = open_socket(server, raw)
    socket.emit('fromServer', {'a': 1}, lambda err, data: results.append((err, data)))
    assert recv_json(client) == {'event': 'fromServer', 'data': {'a': 1}, 'cid': 1}
    client.send('{"rid":1,"data":{"ack":true}}')
    socket.emit('fromServer', 2, lambda err, data: results.append((err, data)))
    assert recv_json(client)['cid'] == 2
    client.send('{"rid":2,"error":{"name":"ClientErr","message":"m"}}')
    socket.emit('fromServer', 3, lambda err, data: results.append((err, data)))
    recv_json(client)
    wait_until(lambda: len(results) == 3)
    assert results[0] == (None, {'ack': True})
    assert results[1][0].name == 'ClientErr' and str(results[1][0]) == 'm'
    assert results[2][0].name == 'TimeoutError'
    assert str(results[2][0]) == "Event response for 'fromServer' timed out"


def test_reserved_local_emit_is_an_error_and_error_emits_locally(make_server, raw):
    """B-082, B-083."""
    server = make_server()
    sockets, errors = [], []
    server.on('connection', lambda socket, status: (sockets.append(socket), socket.on('error', errors.append)))
    handshake(raw(server))
    wait_until(lambda: sockets)
    sockets[0].emit('message', 123)
    custom = Exception('custom')
    sockets[0].emit('error', custom)
    assert errors[0].name == 'InvalidActionError' and errors[1] is custom


def test_double_respond_raises_in_the_handler(make_server, raw):
    """X-37."""
    server = make_server()
    raised = []

    def twice(data, respond):
        respond()
        try:
            respond()
        except Exception as exc:
            raised.append(exc)
    server.on('connection', lambda socket, status: socket.on('twice', twice))
    client = raw(server)
    handshake(client)
    client.send('{"event":"twice","cid":2}')
    assert recv_json(client) == {'rid': 2}
    assert str(raised[0]) == 'Response 2 has already been sent'


def test_a_raising_handler_answers_with_its_error_and_the_socket_lives_on(make_server, raw):
    """Bad input: a handler that raises gives the client its error; the server keeps serving."""
    server = echo_server(make_server)
    warnings = events_of(server, 'warning')

    def on_connection(socket, status):
        def broken(data, respond):
            raise ValueError('broken handler')
        socket.on('broken', broken)
    server.on('connection', on_connection)
    client = raw(server)
    handshake(client)
    client.send('{"event":"broken","cid":2}')
    assert recv_json(client) == {'rid': 2, 'error': {'message': 'Internal server error', 'name': 'Error'}}
    client.send('{"event":"echo","data":1,"cid":3}')
    assert recv_json(client) == {'rid': 3, 'data': 1}
    assert [str(w[1][0]) for w in warnings] == ['broken handler']


def test_frames_pipelined_with_the_upgrade_request_are_not_lost(make_server):
    """A client may send its #handshake in the same write as the upgrade request."""
    from gevent import socket as gsocket
    from websockets.client import ClientProtocol
    from websockets.uri import parse_uri
    server = make_server()
    protocol = ClientProtocol(parse_uri('ws://127.0.0.1:%d/socketcluster/' % server.port))
    protocol.send_request(protocol.connect())
    request = b''.join(protocol.data_to_send())
    from websockets.protocol import OPEN, Protocol, Side
    framer = Protocol(Side.CLIENT, state=OPEN)
    framer.send_text(b'{"event":"#handshake","data":{},"cid":1}')
    sock = gsocket.create_connection(('127.0.0.1', server.port))
    try:
        sock.sendall(request + b''.join(framer.data_to_send()))
        received = b''
        with gevent.Timeout(5):
            while b'"rid":1' not in received:
                received += sock.recv(4096)
        assert received.startswith(b'HTTP/1.1 101 Switching Protocols')
    finally:
        sock.close()
