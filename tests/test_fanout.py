"""A publish to many local subscribers is written in slices that let the loop serve other
clients, in publish order, and never to a socket that left."""

import json
import time

import gevent

from conftest import handshake, recv_json, wait_until
from gsc.server import exchange

MANY = 200


def subscribe(client, channel, cid=2):
    """Subscribe a handshaken raw client to ``channel``."""
    client.send(json.dumps({'event': '#subscribe', 'data': {'channel': channel}, 'cid': cid}))
    assert recv_json(client) == {'rid': cid}


def subscribers(server, raw, count, channel='room'):
    """``count`` raw clients subscribed to ``channel`` (in this order) and their server sockets."""
    sockets = []
    server.on('connection', lambda socket, status: sockets.append(socket))
    clients = []
    for _ in range(count):
        client = raw(server)
        handshake(client)
        subscribe(client, channel)
        clients.append(client)
    wait_until(lambda: len(sockets) == count)
    return clients, sockets


def publications(client, count, timeout=5):
    """The next ``count`` messages of ``client`` as (channel, data) of its ``#publish`` events
    (anything else as itself)."""
    seen = []
    for _ in range(count):
        message = recv_json(client, timeout)
        if isinstance(message, dict) and message.get('event') == '#publish':
            seen.append((message['data']['channel'], message['data']['data']))
        else:
            seen.append(message)
    return seen


def test_overlapping_publishes_reach_every_subscriber_in_order(make_server, raw):
    """Publishes that arrive while an earlier fan-out is still being written (from server code
    and from a client) reach each of MANY subscribers in publish order, and a small channel's
    message published between them is not written ahead of the big channel's earlier ones."""
    server = make_server({'allowClientPublish': True})
    clients, _ = subscribers(server, raw, MANY)
    subscribe(clients[-1], 'side', cid=3)  # written last of the big channel's subscribers
    publisher = raw(server)
    handshake(publisher)
    expected = []

    def publish_from_server_code():
        for n in range(30):
            server.exchange.publish('room', n)
            expected.append(('room', n))
            if n == 10:
                server.exchange.publish('side', 'between')
                expected.append(('side', 'between'))
            if n % 5 == 4:
                gevent.sleep(0.001)
    gevent.spawn(publish_from_server_code).join(10)
    for n in range(30, 40):
        publisher.send(json.dumps({'event': '#publish', 'data': {'channel': 'room', 'data': n}}))
        expected.append(('room', n))
    assert publications(clients[-1], len(expected)) == expected
    room_only = [item for item in expected if item[0] == 'room']
    for client in clients[:-1]:
        assert publications(client, len(room_only)) == room_only


def test_a_socket_that_leaves_mid_fan_out_gets_nothing_after(make_server, raw, monkeypatch):
    """With slices of 2 sockets, a socket kicked out of the channel or closed while a message
    is being written (in the same slice or a later one) gets none of it, nor the message
    queued behind it; every other subscriber gets both, and the next publish too."""
    monkeypatch.setattr(exchange, 'SLICE_SOCKETS', 2)
    server = make_server()
    clients, sockets = subscribers(server, raw, 12)
    kicked_same_slice, closed, kicked_later, dropped = 1, 2, 9, 5
    write = sockets[0].send_publish_frame

    def leave_on_first_message(prepared):
        write(prepared)
        if b'"first"' in prepared.frame:
            sockets[kicked_same_slice].kick_out('room', 'kicked')
            sockets[kicked_later].kick_out('room', 'kicked')
            sockets[closed].disconnect(4321, 'bye')
            sockets[dropped].terminate()
    sockets[0].send_publish_frame = leave_on_first_message
    server.exchange.publish('room', 'first')
    server.exchange.publish('room', 'second')
    stayed = [i for i in range(12) if i not in (kicked_same_slice, closed, kicked_later, dropped)]
    for i in stayed:
        assert publications(clients[i], 2) == [('room', 'first'), ('room', 'second')]
    for i in (kicked_same_slice, kicked_later):
        assert publications(clients[i], 1) == [
            {'event': '#kickOut', 'data': {'message': 'kicked', 'channel': 'room'}}]
    assert recv_json(clients[closed])['event'] == '#disconnect'
    server.exchange.publish('room', 'third')
    for i in stayed:
        assert publications(clients[i], 1) == [('room', 'third')]
    for i in (kicked_same_slice, kicked_later):
        client = clients[i]
        client.send('{"event":"#subscribe","data":{"channel":"check"},"cid":9}')
        assert recv_json(client) == {'rid': 9}, 'a message of the channel it left came first'


def test_other_clients_are_answered_while_a_big_fan_out_is_written(make_server, raw):
    """While 60 messages are written to MANY subscribers, another client's echo is answered
    before the fan-out reaches the last subscriber, which asked for it after the fan-out
    began (a publish written all at once would reach it first), and in well under 5 s."""
    server = make_server()
    server.on('connection', lambda socket, status: (
        socket.on('echo', lambda data, respond: respond(None, data)),
        socket.on('go', lambda data, respond: (
            [server.exchange.publish('room', n) for n in range(60)], respond(None, 'going')))))
    clients, _ = subscribers(server, raw, MANY)
    last = clients[-1]
    starter = raw(server)
    handshake(starter)
    starter.send('{"event":"go","cid":2}')
    assert recv_json(starter) == {'rid': 2, 'data': 'going'}
    sent = time.monotonic()
    last.send('{"event":"echo","data":"ping","cid":5}')
    seen = []
    with gevent.Timeout(10):
        while {'rid': 5, 'data': 'ping'} not in seen:
            seen.append(recv_json(last))
    answered_after = time.monotonic() - sent
    publishes_before_answer = sum(1 for m in seen if isinstance(m, dict) and m.get('event') == '#publish')
    assert publishes_before_answer < 60, 'the echo waited for the whole fan-out'
    assert answered_after < 5
    rest = publications(last, 60 - publishes_before_answer)
    assert [data for _, data in rest] == list(range(publishes_before_answer, 60))
