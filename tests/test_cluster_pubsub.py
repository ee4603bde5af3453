"""Pub/sub and the key/value store across the workers of a real cluster: 2 workers, 2 brokers
(B-014..B-016, B-187, X-39)."""

import json
import os
import signal
import time

import pytest
from websockets.sync.client import connect

from master_harness import start_cluster

OPTIONS = {'workers': 2, 'brokers': 2, 'workerController': 'tests.controllers.pubsub_worker',
           'brokerController': 'tests.controllers.pubsub_broker', 'logLevel': 1}


@pytest.fixture
def cluster(request):
    return start_cluster(request, OPTIONS)


class Client:
    """A raw protocol client (websockets' sync client) that knows its worker."""

    def __init__(self, port):
        self.ws = connect('ws://127.0.0.1:%d/socketcluster/' % port, open_timeout=5, legacy=True)
        self.cid = 1
        self.ws.send(json.dumps({'event': '#handshake', 'data': {}, 'cid': 1}))
        first = self.recv()
        self.worker = first['data']
        assert self.recv()['rid'] == 1

    def recv(self, timeout=5):
        return json.loads(self.ws.recv(timeout))

    def call(self, event, data):
        self.cid += 1
        self.ws.send(json.dumps({'event': event, 'data': data, 'cid': self.cid}))
        while True:
            packet = self.recv()
            if packet.get('rid') == self.cid:
                return packet

    def close(self):
        self.ws.close()


@pytest.fixture
def spread_clients(cluster, request):
    """``clients(per_worker)`` -> clients spread over both workers, closed at teardown."""
    def make(per_worker=2):
        made = clients_on_both_workers(cluster.port, per_worker)
        request.addfinalizer(lambda: [client.close() for client in made])
        return made
    return make


def clients_on_both_workers(port, per_worker=2, attempts=40):
    """Connect until each worker holds ``per_worker`` clients (SO_REUSEPORT spreads them)."""
    chosen, spare = {0: [], 1: []}, []
    for _ in range(attempts):
        client = Client(port)
        (chosen[client.worker] if len(chosen[client.worker]) < per_worker else spare).append(client)
        if all(len(c) == per_worker for c in chosen.values()):
            break
    for client in spare:
        client.close()
    assert all(len(c) == per_worker for c in chosen.values()), 'connections did not reach both workers'
    return chosen[0] + chosen[1]


def test_a_publish_reaches_subscribers_on_every_worker_once_in_order(cluster, spread_clients):
    clients = spread_clients()
    for client in clients:
        assert client.call('#subscribe', {'channel': 'room'}) == {'rid': client.cid}
    publisher = clients[0]
    for n in range(200):
        publisher.ws.send(json.dumps({'event': '#publish', 'data': {'channel': 'room', 'data': n}}))
    for client in clients:
        got = [client.recv()['data']['data'] for _ in range(200)]
        assert got == list(range(200))
    for client in clients[2:]:
        client.ws.send('{"event":"#unsubscribe","data":"room"}')
    time.sleep(0.2)
    publisher.ws.send(json.dumps({'event': '#publish', 'data': {'channel': 'room', 'data': 'last'}}))
    assert clients[1].recv()['data']['data'] == 'last'
    for client in clients[2:]:
        answer = client.call('kv', {'method': 'get', 'args': ['nothing']})
        assert answer == {'rid': client.cid, 'data': None}


def test_key_value_store_and_send_across_workers(cluster, spread_clients):
    clients = spread_clients(1)
    a, b = clients
    assert a.call('kv', {'method': 'set', 'args': [['users', 'alice'], {'age': 30}]})['rid'] == a.cid
    assert b.call('kv', {'method': 'get', 'args': [['users', 'alice', 'age']]})['data'] == 30
    assert b.call('kv', {'method': 'add', 'args': [['list'], 'x']})['data'] == 0
    assert a.call('kv', {'method': 'get', 'args': [['list']]})['data'] == ['x']
    error = a.call('kv', {'method': 'set', 'args': [{'bad': 'key'}, 1]})['error']
    assert 'a key must be a str or an int' in error['message']
    assert b.call('send', 'ping')['data'] == [{'broker': 1, 'got': 'ping'}]


def test_a_killed_broker_is_respawned_and_subscribers_keep_receiving(cluster, spread_clients):
    clients = spread_clients(1)
    for client in clients:
        assert client.call('#subscribe', {'channel': 'foo'}) == {'rid': client.cid}
    broker = cluster.expect('brokerStart', data={'id': 0})
    os.kill(broker['data']['pid'], signal.SIGKILL)
    cluster.expect('brokerExit', data={'id': 0})
    cluster.expect('brokerStart', data={'id': 0, 'respawn': True})
    cluster.expect('warning', timeout=10)
    received = None
    deadline = time.time() + 10
    while received is None and time.time() < deadline:
        clients[0].ws.send(json.dumps({'event': '#publish', 'data': {'channel': 'foo', 'data': 'again'}}))
        try:
            received = clients[1].recv(timeout=0.5)
        except TimeoutError:
            pass
    assert received == {'event': '#publish', 'data': {'channel': 'foo', 'data': 'again'}}


def test_a_raising_handler_answers_the_caller_and_the_worker_lives_on(cluster, spread_clients):
    """Bad input: data a handler did not expect must not crash the worker of everyone else."""
    clients = spread_clients(1)
    answer = clients[0].call('boom', {})
    assert answer['error'] == {'message': "'missing'", 'name': 'KeyError'}
    assert clients[0].call('kv', {'method': 'get', 'args': ['x']}) == {'rid': clients[0].cid, 'data': None}
    warning = cluster.expect('warning', timeout=10)
    assert "'missing'" in json.dumps(warning)
    assert not [e for e in cluster.events if e.get('event') == 'workerExit']
