"""The exchange from server code: channels, watchers, publish."""

import json

import gevent

from conftest import handshake, recv_json, wait_until


def test_ready_fires_after_construction(make_server):
    """'ready' reaches listeners attached right after construction."""
    from gsc.server import SCServer
    server = SCServer({})
    seen = []
    server.on('ready', lambda: seen.append('ready'))
    wait_until(lambda: seen)
    assert server.is_ready


def test_server_publish_reaches_subscribed_sockets_and_watchers(make_server, raw):
    """B-002: exchange.publish from server code reaches the client and the exchange watchers."""
    server = make_server()
    watched = []
    channel = server.exchange.subscribe('pong')
    channel.watch(watched.append)
    assert channel.state == 'subscribed' and server.exchange.subscriptions() == ['pong']
    assert server.exchange.is_subscribed('pong') and server.exchange.watchers('pong') == [watched.append]
    client = raw(server)
    handshake(client)
    client.send('{"event":"#subscribe","data":{"channel":"pong"},"cid":2}')
    assert recv_json(client) == {'rid': 2}
    results = []
    server.exchange.publish('pong', {'message': 'This is pong data'}, results.append)
    assert recv_json(client) == {'event': '#publish', 'data': {'channel': 'pong', 'data': {
        'message': 'This is pong data'}}}
    assert watched == [{'message': 'This is pong data'}] and results == [None]


def test_client_publish_reaches_every_subscriber_once(make_server, raw):
    """B-003: a client publish reaches every subscribed socket of the worker, itself included."""
    server = make_server()
    clients = [raw(server) for _ in range(3)]
    for client in clients:
        handshake(client)
        client.send('{"event":"#subscribe","data":{"channel":"room"},"cid":2}')
        assert recv_json(client) == {'rid': 2}
    clients[0].send(json.dumps({'event': '#publish', 'data': {'channel': 'room', 'data': {'n': 1}}}))
    for client in clients:
        assert recv_json(client) == {'event': '#publish', 'data': {'channel': 'room', 'data': {'n': 1}}}
    clients[1].send('{"event":"#unsubscribe","data":"room"}')
    gevent.sleep(0.05)
    server.exchange.publish('room', 'second')
    for client in (clients[0], clients[2]):
        assert recv_json(client)['data']['data'] == 'second'
    clients[1].send('{"event":"#subscribe","data":{"channel":"other"},"cid":3}')
    assert recv_json(clients[1]) == {'rid': 3}


def test_unsubscribe_destroy_and_unwatch(make_server):
    """unsubscribe stops watchers; destroy_channel forgets the channel."""
    server = make_server()
    events, watched = [], []
    server.exchange.on('subscribe', lambda name: events.append(('subscribe', name)))
    server.exchange.on('unsubscribe', lambda name: events.append(('unsubscribe', name)))
    channel = server.exchange.subscribe('c')
    channel.watch(watched.append)
    server.exchange.publish('c', 1)
    channel.unsubscribe()
    server.exchange.publish('c', 2)
    assert watched == [1] and channel.state == 'unsubscribed'
    channel.subscribe()
    server.exchange.publish('c', 3)
    server.exchange.unwatch('c', watched.append)
    server.exchange.publish('c', 4)
    assert watched == [1, 3]
    server.exchange.destroy_channel('c')
    assert server.exchange.subscriptions(include_pending=True) == []
    assert events == [('subscribe', 'c'), ('unsubscribe', 'c'), ('subscribe', 'c'), ('unsubscribe', 'c')]
    server.exchange.destroy_channel('fakeChannel')


def test_a_non_string_channel_is_refused_with_a_clear_error(make_server):
    """Bad input: exchange.publish to a non-string channel names the problem."""
    server = make_server()
    results = []
    server.exchange.publish(123, 'x', results.append)
    assert results[0].name == 'InvalidArgumentsError'


def test_no_delivery_after_unsubscribe_even_from_the_unsubscribe_handler(make_server, raw):
    """B-069: a publish made while the socket unsubscribes does not reach it."""
    server = make_server()

    def on_connection(socket, status):
        socket.on('unsubscribe', lambda channel: server.exchange.publish(channel, 'hello'))
    server.on('connection', on_connection)
    client = raw(server)
    handshake(client)
    client.send('{"event":"#subscribe","data":{"channel":"foo"},"cid":2}')
    assert recv_json(client) == {'rid': 2}
    client.send('{"event":"#unsubscribe","data":"foo","cid":3}')
    assert recv_json(client) == {'rid': 3}
    client.send('{"event":"#subscribe","data":{"channel":"bar"},"cid":4}')
    assert recv_json(client) == {'rid': 4}
