"""Two gsc instances (two process trees on two ports) share channels through Redis, with no
broker processes, and recover after Redis restarts."""

import json
import time

import pytest
from websockets.sync.client import connect

from master_harness import start_cluster


@pytest.fixture
def instances(request, redis_server):
    started = []
    for _ in range(2):
        started.append(start_cluster(request, {
            'workers': 1, 'brokers': 0, 'workerController': 'tests.controllers.pubsub_worker',
            'brokerEngine': 'redis', 'brokerEngineOptions': {'url': redis_server.url}},
            ready=False))
    for master in started:
        master.ready(timeout=30)
    return started


def client(port):
    ws = connect('ws://127.0.0.1:%d/socketcluster/' % port, open_timeout=5, legacy=True)
    ws.send('{"event":"#handshake","data":{},"cid":1}')
    assert json.loads(ws.recv(5))['event'] == 'worker'  # tests.controllers.pubsub_worker says hello
    assert json.loads(ws.recv(5))['rid'] == 1
    return ws


def subscribe(ws, channel):
    ws.send(json.dumps({'event': '#subscribe', 'data': {'channel': channel}, 'cid': 2}))
    assert json.loads(ws.recv(5)) == {'rid': 2}


def test_no_broker_processes_and_publishes_cross_instances_once_in_order(instances):
    a, b = instances
    assert not any(e['event'] == 'brokerStart' for e in a.events + b.events)
    on_a, on_b = client(a.port), client(b.port)
    try:
        subscribe(on_a, 'room')
        subscribe(on_b, 'room')
        time.sleep(0.2)
        for n in range(100):
            on_b.send(json.dumps({'event': '#publish', 'data': {'channel': 'room', 'data': n}}))
        for ws in (on_a, on_b):
            assert [json.loads(ws.recv(5))['data']['data'] for _ in range(100)] == list(range(100))
        on_a.send('{"event":"#publish","data":{"channel":"other","data":1},"cid":3}')
        assert json.loads(on_a.recv(5)) == {'rid': 3}
    finally:
        on_a.close()
        on_b.close()


def test_instances_recover_after_redis_restarts(instances, redis_server):
    a, b = instances
    on_a, on_b = client(a.port), client(b.port)
    try:
        subscribe(on_a, 'room')
        redis_server.stop()
        on_b.send('{"event":"#publish","data":{"channel":"room","data":"lost"},"cid":5}')
        answer = json.loads(on_b.recv(5))
        assert answer['rid'] == 5 and answer['error']['name'] == 'BrokerError'
        a.expect('warning', timeout=10)
        redis_server.start()
        received = None
        deadline = time.time() + 15
        while received is None and time.time() < deadline:
            on_b.send('{"event":"#publish","data":{"channel":"room","data":"back"}}')
            try:
                received = json.loads(on_a.recv(0.3))
            except TimeoutError:
                pass
        assert received == {'event': '#publish', 'data': {'channel': 'room', 'data': 'back'}}
    finally:
        on_a.close()
        on_b.close()
