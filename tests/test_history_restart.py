"""No silent gap across broker restarts, with the official socketcluster-client 14.3.2
(tests/js/subscribers.js) on a real cluster of 2 workers and 1 broker: subscribers and
publishers on both workers, the broker killed (kill -9) again and again while they publish;
each worker re-links on its own retry timer, and every subscriber must see every epoch as
offsets 1, 2, ... with no gap (only what was in flight inside a killed broker may be missing
at the end of its epoch), the last epoch whole."""

import json
import os
import signal
import time

import gevent
import pytest
from gevent import subprocess

from conftest import wait_until
from master_harness import start_cluster
from test_history_cluster import JS_DIR, NODE, needs_node

CHANNEL = 'room/a'
OPTIONS = {'workers': 2, 'brokers': 1, 'workerController': 'tests.controllers.history_worker',
           'channelHistory': {'room/*': {'size': 2000, 'publishOffsets': True}}}
KILLS = 5
CLIENTS = 8


class NodeClients:
    """tests/js/subscribers.js under Node: ``lines`` (decoded observations) as they arrive."""

    def __init__(self, port, count, pause_ms):
        self.lines = []
        self.proc = subprocess.Popen(
            [NODE, os.path.join(JS_DIR, 'subscribers.js'), str(port), CHANNEL, str(count),
             str(pause_ms)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=dict(os.environ, SCENARIO_TIMEOUT='100'))
        self.reader = gevent.spawn(self._read)

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def send(self, **command):
        self.proc.stdin.write((json.dumps(command) + '\n').encode())
        self.proc.stdin.flush()

    def of(self, event, client=None):
        return [line['data'] for line in self.lines
                if line['event'] == event and (client is None or line['client'] == client)]

    def workers(self):
        """client index -> worker id."""
        return {line['client']: line['data']['id'] for line in self.lines if line['event'] == 'worker'}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.reader.join(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            stream.close()


@pytest.fixture
def cluster(request):
    return start_cluster(request, OPTIONS)


@pytest.fixture
def node_clients(request):
    made = []

    def start(port, count, pause_ms):
        started = NodeClients(port, count, pause_ms)
        made.append(started)
        return started
    yield start
    for started in made:
        started.stop()


def spread_clients(node_clients, port, attempts=5):
    """Node clients with at least one on each worker (connections spread by SO_REUSEPORT)."""
    for _ in range(attempts):
        node = node_clients(port, CLIENTS, 4)
        wait_until(lambda: len(node.workers()) == CLIENTS and len(node.of('subscribe')) == CLIENTS,
                   timeout=15)
        if len(set(node.workers().values())) == 2:
            return node
        node.stop()
    raise AssertionError('the clients never reached both workers')


def epochs_of(messages):
    """``[(epoch, [offset, ...]), ...]`` of ``messages`` in their arrival order."""
    runs = []
    for message in messages:
        if not runs or runs[-1][0] != message['epoch']:
            runs.append((message['epoch'], []))
        runs[-1][1].append(message['offset'])
    return runs


@needs_node
@pytest.mark.timeout(150)
def test_every_subscriber_sees_every_epoch_from_offset_1_across_broker_kills(cluster, node_clients):
    node = spread_clients(node_clients, cluster.port)
    workers = node.workers()
    publishers = [min(i for i, w in workers.items() if w == worker) for worker in (0, 1)]
    node.send(publish=publishers)
    broker = cluster.expect('brokerStart', data={'id': 0})['data']
    for kill in range(KILLS):
        # every subscriber is live in the current epoch before the next kill
        wait_until(lambda: all(len(epochs_of(node.of('message', i))) > kill and
                               len(epochs_of(node.of('message', i))[-1][1]) >= 20
                               for i in range(CLIENTS)), timeout=20)
        os.kill(broker['pid'], signal.SIGKILL)
        broker = cluster.expect('brokerStart', data={'id': 0, 'respawn': True}, timeout=20)['data']
    wait_until(lambda: all(len(epochs_of(node.of('message', i))) == KILLS + 1 and
                           len(epochs_of(node.of('message', i))[-1][1]) >= 20
                           for i in range(CLIENTS)), timeout=20)
    node.send(stop=True)
    wait_until(lambda: len(node.of('stopped')) == 2, timeout=20)
    # only publishes in flight inside a killed broker may fail
    errors = [err for stopped in node.of('stopped') for err in stopped['errors']]
    assert all('was closed before a response arrived' in err for err in errors), errors
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        last = max(messages[-1]['offset'] for messages in
                   (node.of('message', i) for i in range(CLIENTS)))
        if all(node.of('message', i)[-1]['offset'] == last for i in range(CLIENTS)):
            break
        gevent.sleep(0.1)
    assert not node.of('recovery'), node.of('recovery')
    final = None
    for i in range(CLIENTS):
        runs = epochs_of(node.of('message', i))
        assert len(runs) == KILLS + 1 and len({epoch for epoch, _ in runs}) == KILLS + 1, \
            (i, workers[i], [(epoch, offsets[:3], len(offsets)) for epoch, offsets in runs])
        for epoch, offsets in runs:
            assert offsets == list(range(1, len(offsets) + 1)), \
                (i, workers[i], epoch, [o for k, o in enumerate(offsets, 1) if o != k][:5])
        if final is None:
            final = runs[-1]
        assert runs[-1] == final, (i, workers[i])
    # the last epoch's publications reached every subscriber, each publisher's in order
    messages = [m for m in node.of('message', 0) if m['epoch'] == final[0]]
    for publisher in publishers:
        numbers = [m['data']['n'] for m in messages if m['data']['p'] == publisher]
        assert numbers == sorted(numbers) and numbers[-1] == node.of('stopped', publisher)[0]['count']


@pytest.fixture
def redis_instances(request, redis_server):
    """Two gsc instances (1 worker each, no brokers) sharing channels through Redis."""
    started = [start_cluster(request, {
        'workers': 1, 'brokers': 0, 'workerController': 'tests.controllers.history_worker',
        'brokerEngine': 'redis', 'brokerEngineOptions': {'url': redis_server.url},
        'channelHistory': OPTIONS['channelHistory']}, ready=False) for _ in range(2)]
    for master in started:
        master.ready(timeout=30)
    return started


@needs_node
@pytest.mark.timeout(150)
def test_every_subscriber_sees_every_redis_epoch_from_offset_1_across_redis_restarts(
        redis_instances, redis_server, node_clients):
    nodes = [node_clients(master.port, 2, 4) for master in redis_instances]
    wait_until(lambda: all(len(node.of('subscribe')) == 2 for node in nodes), timeout=15)
    for node in nodes:
        node.send(publish=[0])
    restarts = 3
    for round_ in range(restarts + 1):
        wait_until(lambda: all(len(epochs_of(node.of('message', i))) == round_ + 1 and
                               len(epochs_of(node.of('message', i))[-1][1]) >= 20
                               for node in nodes for i in range(2)), timeout=20)
        if round_ < restarts:
            redis_server.stop()
            gevent.sleep(0.3)
            redis_server.start()
    for node in nodes:
        node.send(stop=True)
    wait_until(lambda: all(node.of('stopped') for node in nodes), timeout=20)
    def last_runs():
        return [epochs_of(node.of('message', i))[-1] for node in nodes for i in range(2)]
    wait_until(lambda: all(run == last_runs()[0] for run in last_runs()), timeout=10)
    final = None
    for node in nodes:
        assert not node.of('recovery'), node.of('recovery')
        for i in range(2):
            runs = epochs_of(node.of('message', i))
            assert len({epoch for epoch, _ in runs}) == len(runs) == restarts + 1
            for epoch, offsets in runs:
                assert offsets == list(range(1, len(offsets) + 1)), \
                    (i, epoch, [o for k, o in enumerate(offsets, 1) if o != k][:5])
            final = final or runs[-1]
            assert runs[-1] == final
    assert len(final[1]) >= 20
