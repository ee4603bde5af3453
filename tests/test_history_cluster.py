"""History and recovery in a real cluster (2 workers, 1 broker), with the Python client and
the official socketcluster-client 14.3.2 (tests/js/recovery.js): across a worker kill -9 the
subscriber receives every offset exactly once, in order, while a publisher on the other worker
keeps publishing; across a broker kill -9 the epoch changes and the subscriber is told
``recovered: false``."""

import json
import os
import shutil
import signal

import gevent
import pytest
from gevent import subprocess

from conftest import wait_until
from kit import start_process, stop_process
from master_harness import start_cluster

CHANNEL = 'room/a'
OPTIONS = {'workers': 2, 'brokers': 1, 'workerController': 'tests.controllers.history_worker',
           'channelHistory': {'room/*': {'size': 1000, 'publishOffsets': True}}}
JS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'js')
NODE = shutil.which('node')
needs_node = pytest.mark.skipif(
    NODE is None or not os.path.isdir(os.path.join(JS_DIR, 'node_modules', 'socketcluster-client')),
    reason='needs node and `npm ci --prefix tests/js`')


@pytest.fixture
def cluster(request):
    return start_cluster(request, OPTIONS)


def client_on_worker(clients, port, avoid=None, attempts=40):
    """A Python client and its worker {id, pid}; on another worker than ``avoid`` when given."""
    for _ in range(attempts):
        client = clients(port)
        workers = []
        client.on('worker', lambda data, respond: workers.append(data))
        wait_until(lambda: workers)
        if avoid is None or workers[0]['id'] != avoid:
            return client, workers[0]
        client.destroy()
    raise AssertionError('no connection reached the other worker')


class Publisher:
    """Publishes 1..total on ``CHANNEL`` from its own greenlet, one every ``pause`` seconds."""

    def __init__(self, client, total, pause=0.01):
        self.errors = []
        self.greenlet = gevent.spawn(self._run, client, total, pause)

    def _run(self, client, total, pause):
        for n in range(1, total + 1):
            client.publish(CHANNEL, n, lambda err, _data: err and self.errors.append(err))
            gevent.sleep(pause)

    def finish(self):
        self.greenlet.join(20)
        assert self.greenlet.successful() and not self.errors, self.errors


def python_subscriber(clients, port):
    """A Python client subscribed to CHANNEL: (client, worker, received, recoveries)."""
    client, worker = client_on_worker(clients, port)
    received, recoveries = [], []
    channel = client.subscribe(CHANNEL)
    channel.watch(received.append)
    channel.on('recovery', recoveries.append)
    wait_until(lambda: channel.state == 'subscribed')
    return client, worker, received, recoveries


def test_python_client_recovers_every_offset_across_a_worker_kill(cluster, clients):
    client, worker, received, recoveries = python_subscriber(clients, cluster.port)
    publisher_client, _ = client_on_worker(clients, cluster.port, avoid=worker['id'])
    total = 150
    publisher = Publisher(publisher_client, total)
    wait_until(lambda: len(received) >= 30, timeout=10)
    os.kill(worker['pid'], signal.SIGKILL)
    publisher.finish()
    wait_until(lambda: received and received[-1]['data'] == total, timeout=15)
    assert [m['offset'] for m in received] == list(range(1, total + 1))
    assert [m['data'] for m in received] == list(range(1, total + 1))
    assert len({m['epoch'] for m in received}) == 1
    assert recoveries and all(r['recovered'] for r in recoveries)
    assert recoveries[0]['epoch'] == received[0]['epoch']


def test_python_client_is_told_the_history_is_lost_across_a_broker_kill(cluster, clients):
    client, worker, received, recoveries = python_subscriber(clients, cluster.port)
    publisher_client, _ = client_on_worker(clients, cluster.port, avoid=worker['id'])
    Publisher(publisher_client, 5, pause=0).finish()
    wait_until(lambda: len(received) == 5)
    old_epoch = received[-1]['epoch']
    broker = cluster.expect('brokerStart', data={'id': 0})
    os.kill(broker['data']['pid'], signal.SIGKILL)
    os.kill(worker['pid'], signal.SIGKILL)
    wait_until(lambda: recoveries, timeout=15)
    assert recoveries[0]['recovered'] is False and recoveries[0]['epoch'] != old_epoch
    assert recoveries[0]['missed'] == 0 and len(received) == 5
    new_epoch = recoveries[0]['epoch']
    publisher_client.publish(CHANNEL, 'after')
    wait_until(lambda: received[-1]['data'] == 'after', timeout=10)
    assert received[-1]['epoch'] == new_epoch
    assert received[-1]['offset'] == recoveries[0]['offset'] + 1


class NodeSubscriber:
    """tests/js/recovery.js under Node: ``lines`` (decoded observations) as they arrive."""

    def __init__(self, port, last):
        self.lines = []
        self.proc = start_process([NODE, os.path.join(JS_DIR, 'recovery.js'), str(port), CHANNEL,
                                   str(last)], popen=subprocess.Popen, stdout=subprocess.PIPE,
                                  env=dict(os.environ, SCENARIO_TIMEOUT='30'))
        self.reader = gevent.spawn(self._read)

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def of(self, event):
        return [line['data'] for line in self.lines if line['event'] == event]

    def stop(self):
        self.reader.kill()
        stop_process(self.proc)


@pytest.fixture
def node_subscriber(request):
    made = []

    def start(port, last):
        subscriber = NodeSubscriber(port, last)
        made.append(subscriber)
        return subscriber
    yield start
    for subscriber in made:
        subscriber.stop()


@needs_node
def test_official_client_recovers_every_offset_across_a_worker_kill(cluster, clients, node_subscriber):
    total = 150
    node = node_subscriber(cluster.port, total)
    wait_until(lambda: node.of('subscribe') and node.of('worker'), timeout=10)
    worker = node.of('worker')[0]
    publisher_client, _ = client_on_worker(clients, cluster.port, avoid=worker['id'])
    publisher = Publisher(publisher_client, total)
    wait_until(lambda: len(node.of('message')) >= 30, timeout=10)
    os.kill(worker['pid'], signal.SIGKILL)
    publisher.finish()
    wait_until(lambda: node.of('done'), timeout=15)
    messages = node.of('message')
    assert [m['offset'] for m in messages] == list(range(1, total + 1))
    assert [m['data'] for m in messages] == list(range(1, total + 1))
    recoveries = node.of('recovery')
    assert recoveries and all(r['recovered'] for r in recoveries)
    assert recoveries[0]['channel'] == CHANNEL and recoveries[0]['epoch'] == messages[0]['epoch']


@needs_node
def test_official_client_is_told_the_history_is_lost_across_a_broker_kill(cluster, clients,
                                                                          node_subscriber):
    node = node_subscriber(cluster.port, 'after')
    wait_until(lambda: node.of('subscribe') and node.of('worker'), timeout=10)
    worker = node.of('worker')[0]
    publisher_client, _ = client_on_worker(clients, cluster.port, avoid=worker['id'])
    Publisher(publisher_client, 5, pause=0).finish()
    wait_until(lambda: len(node.of('message')) == 5, timeout=10)
    old_epoch = node.of('message')[-1]['epoch']
    broker = cluster.expect('brokerStart', data={'id': 0})
    os.kill(broker['data']['pid'], signal.SIGKILL)
    os.kill(worker['pid'], signal.SIGKILL)
    wait_until(lambda: node.of('recovery'), timeout=15)
    recovery = node.of('recovery')[0]
    assert recovery['recovered'] is False and recovery['epoch'] != old_epoch
    publisher_client.publish(CHANNEL, 'after')
    wait_until(lambda: node.of('done'), timeout=10)
    assert node.of('message')[-1]['epoch'] == recovery['epoch'] and len(node.of('message')) == 6
