"""The Redis engine: two gsc servers share channels through a private redis-server."""

import json

import gevent

from conftest import handshake, recv_json, wait_until


def redis_servers(make_server, redis_server, count=2):
    servers = []
    for _ in range(count):
        server = make_server({'brokerEngine': 'redis', 'brokerEngineOptions': {'url': redis_server.url}})
        ready = []
        server.on('ready', lambda: ready.append(True))
        wait_until(lambda: ready or server.is_ready)
        servers.append(server)
    return servers


def subscribe(client, channel, cid=2):
    client.send(json.dumps({'event': '#subscribe', 'data': {'channel': channel}, 'cid': cid}))
    assert recv_json(client) == {'rid': cid}


def test_two_instances_deliver_each_others_publishes_once_and_in_order(make_server, raw, redis_server):
    a, b = redis_servers(make_server, redis_server)
    on_a, on_b = raw(a), raw(b)
    for client in (on_a, on_b):
        handshake(client)
        subscribe(client, 'room')
    gevent.sleep(0.1)
    for n in range(50):
        on_a.send(json.dumps({'event': '#publish', 'data': {'channel': 'room', 'data': n}}))
    for client in (on_a, on_b):
        got = [recv_json(client)['data']['data'] for _ in range(50)]
        assert got == list(range(50))
    on_b.send('{"event":"#unsubscribe","data":"room"}')
    gevent.sleep(0.1)
    a.exchange.publish('room', 'after')
    assert recv_json(on_a)['data']['data'] == 'after'
    on_b.send('{"event":"#subscribe","data":{"channel":"probe"},"cid":9}')
    assert recv_json(on_b) == {'rid': 9}


def test_instances_recover_after_redis_restarts(make_server, raw, redis_server):
    a, b = redis_servers(make_server, redis_server)
    warnings = []
    b.on('warning', warnings.append)
    on_a, on_b = raw(a), raw(b)
    for client in (on_a, on_b):
        handshake(client)
        subscribe(client, 'room')
    redis_server.stop()
    on_a.send('{"event":"#publish","data":{"channel":"room","data":"lost"},"cid":5}')
    answer = recv_json(on_a)
    assert answer['rid'] == 5 and answer['error']['name'] == 'BrokerError'
    wait_until(lambda: any('Lost the connection to Redis' in str(w) for w in warnings))
    redis_server.start()
    delivered = []

    def publish_until_delivered():
        while not delivered:
            a.exchange.publish('room', 'back', lambda err: None)
            try:
                delivered.append(recv_json(on_b, timeout=0.2))
            except Exception:
                pass
    with gevent.Timeout(10):
        publish_until_delivered()
    assert delivered[0]['data'] == {'channel': 'room', 'data': 'back'}
