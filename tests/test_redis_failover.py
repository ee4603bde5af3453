"""The Redis engine past one Redis server, with real processes on 127.0.0.1: a primary with 2
replicas and 3 sentinels, and a Redis Cluster of 3 primaries and 3 replicas.  A ``kill -9`` of
a primary under a steady publish load: delivery resumes, every acknowledged publication of a
history channel reaches the subscriber once and in order, and every publish is answered."""

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time

import gevent
import pytest
import redis

from conftest import engine_call, wait_until
from gsc.core.history import HistoryRules
from gsc.core.presence import PresenceRules
from gsc.engines.redis import RedisEngine
from master_harness import free_port

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which('redis-server') is None,
                                 reason='redis-server is not installed (.ci/run installs it)')]

HISTORY = HistoryRules.from_options({'channelHistory': {'h/*': {'size': 1000, 'ttl': 60}}})
PRESENCE = PresenceRules.from_options({'channelPresence': {'p/*': {}}})
CHANNELS = ['room/%d' % n for n in range(4)] + ['h/%d' % n for n in range(4)]


class Processes:
    """redis-server processes in a private directory, each killed by pid at teardown."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix='gsc-redis-')
        self.by_port = {}

    def start(self, port, *args, conf=None):
        workdir = os.path.join(self.dir, str(port))
        os.makedirs(workdir, exist_ok=True)
        command = ['redis-server']
        if conf is not None:
            path = os.path.join(workdir, 'sentinel.conf')
            with open(path, 'w') as handle:
                handle.write(conf)
            command += [path, '--sentinel']
        command += ['--port', str(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
                    *args]
        self.by_port[port] = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL)
        wait_until(lambda: _answers(port), timeout=10)

    def kill(self, port):
        os.kill(self.by_port[port].pid, signal.SIGKILL)
        self.by_port[port].wait(5)

    def close(self):
        for process in self.by_port.values():
            if process.poll() is None:
                process.kill()
                process.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def _answers(port):
    try:
        return redis.Redis(port=port, socket_connect_timeout=0.2).ping()
    except redis.RedisError:
        return False


def _synced(port):
    return redis.Redis(port=port).info('replication').get('master_link_status') == 'up'


@pytest.fixture
def sentinel_set():
    """``(processes, primary port, [sentinel ports])``: a primary, 2 replicas, 3 sentinels
    (down-after-milliseconds 1000)."""
    processes = Processes()
    try:
        primary, *replicas = [free_port() for _ in range(3)]
        processes.start(primary)
        for port in replicas:
            processes.start(port, '--replicaof', '127.0.0.1', str(primary))
        sentinels = [free_port() for _ in range(3)]
        for port in sentinels:
            processes.start(port, conf='sentinel monitor gsc 127.0.0.1 %d 2\n'
                                       'sentinel down-after-milliseconds gsc 1000\n'
                                       'sentinel failover-timeout gsc 5000\n' % primary)
        wait_until(lambda: all(_synced(port) for port in replicas), timeout=15)
        yield processes, primary, sentinels
    finally:
        processes.close()


@pytest.fixture
def redis_cluster():
    """``(processes, [node ports])``: a Redis Cluster of 3 primaries and 3 replicas
    (cluster-node-timeout 1000)."""
    if subprocess.run(['redis-cli', '--version'], capture_output=True).returncode != 0:
        pytest.skip('redis-cli is not installed')
    processes = Processes()
    try:
        ports = [free_port() for _ in range(6)]
        for port in ports:
            processes.start(port, '--cluster-enabled', 'yes', '--cluster-node-timeout', '1000',
                            '--cluster-config-file', 'nodes.conf')
        subprocess.run(['redis-cli', '--cluster', 'create', *['127.0.0.1:%d' % p for p in ports],
                        '--cluster-replicas', '1', '--cluster-yes'], check=True, timeout=30,
                       capture_output=True)
        wait_until(lambda: redis.Redis(port=ports[0]).cluster('info')['cluster_state'] == 'ok',
                   timeout=15)
        replicas = lambda: [p for p in ports if redis.Redis(port=p).info('replication')['role'] == 'slave']
        wait_until(lambda: len(replicas()) == 3 and all(_synced(p) for p in replicas()), timeout=15)
        yield processes, ports
    finally:
        processes.close()


def started(count, **options):
    engines = []
    for _ in range(count):
        received = []
        ready = []
        engine = RedisEngine(connect_timeout=1000, history_rules=HISTORY, presence_rules=PRESENCE,
                             **options)
        engine.start(lambda *message, received=received: received.append(message),
                     lambda ready=ready: ready.append(True))
        wait_until(lambda: ready, timeout=15)
        engines.append((engine, received))
    return engines


def publish_through_a_kill(publisher, subscriber, received, kill):
    """Publish on CHANNELS every 20 ms for 12 s, killing at 1 s; then check what arrived."""
    acks = []
    for channel in CHANNELS:
        subscriber.subscribe(channel)
    gevent.sleep(0.5)
    started_at = time.monotonic()
    killed = False
    n = 0
    while time.monotonic() - started_at < 12:
        if not killed and time.monotonic() - started_at > 1:
            kill()
            killed = True
        for channel in CHANNELS:
            publisher.publish(channel, n, lambda err, c=channel, n=n: acks.append((c, n, err)))
        n += 1
        gevent.sleep(0.02)
    gevent.sleep(1)
    assert len(acks) == n * len(CHANNELS)  # every publish answered
    for channel in CHANNELS:
        acked = [m for c, m, err in acks if c == channel and err is None]
        got = [message[1] for message in received if message[0] == channel]
        assert got == sorted(set(got)), channel  # once, in order
        if channel.startswith('h/'):
            assert set(acked) <= set(got), (channel, sorted(set(acked) - set(got))[:10])
        # delivery resumed: the last second's publications arrived
        assert got and got[-1] >= n - 40, (channel, got[-5:], n)
    failed = [err for _c, _m, err in acks if err is not None]
    assert all(err.name == 'BrokerError' for err in failed)


def test_sentinel_failover_resumes_delivery_without_a_silent_gap(sentinel_set, caplog):
    processes, primary, sentinels = sentinel_set
    caplog.set_level(logging.INFO, 'gsc.engines.redis')
    options = dict(sentinels=[('127.0.0.1', port) for port in sentinels], master_name='gsc',
                   url='redis://')
    (publisher, _), (subscriber, received) = started(2, **options)
    try:
        assert engine_call(publisher.kv, 'set', {'key': 'k', 'value': 1})[0] is None
        publish_through_a_kill(publisher, subscriber, received, lambda: processes.kill(primary))
        lines = [r.getMessage() for r in caplog.records
                 if r.getMessage().startswith('Reconnected to Redis primary')]
        # a line per reconnect of each engine: the subscriber's names every channel, the
        # publisher's (subscribed to none) says 0; the two come in either order
        assert 1 <= len(lines) <= 2
        assert any('subscribed again to %d channels' % len(CHANNELS) in line for line in lines), lines
        assert engine_call(subscriber.kv, 'get', {'key': 'k'}) == (None, 1)
        assert all(state[1] for state in subscriber.link_states())
    finally:
        publisher.close()
        subscriber.close()


def test_cluster_failover_resumes_sharded_delivery_without_a_silent_gap(redis_cluster, caplog):
    processes, ports = redis_cluster
    caplog.set_level(logging.INFO, 'gsc.engines.redis')
    (publisher, _), (subscriber, received) = started(2, url='redis://127.0.0.1:%d' % ports[1])
    try:
        assert publisher.cluster and subscriber.cluster  # detected
        assert engine_call(publisher.kv, 'set', {'key': ['a', 'b'], 'value': 1})[0] is None
        assert engine_call(subscriber.kv, 'getAll', {}) == (None, {'a': {'b': 1}})
        assert engine_call(publisher.presence_join, 'p/1', 's1', {'user': 'u', 'worker': 0}) == (None, None)
        assert engine_call(subscriber.presence, 'p/1') == (None, {'s1': {'user': 'u', 'worker': 0}})
        for channel in CHANNELS:
            subscriber.subscribe(channel)
        gevent.sleep(0.3)
        owners = {subscriber._client.get_node_from_key(subscriber._name(c)).name for c in CHANNELS}
        assert set(subscriber._subscribers) == owners  # one subscriber per owning primary
        victim = subscriber._client.get_node_from_key(subscriber._name('h/0')).port
        publish_through_a_kill(publisher, subscriber, received, lambda: processes.kill(victim))
        assert any('subscribed again to' in r.getMessage() for r in caplog.records)
        assert '127.0.0.1:%d' % victim not in subscriber._subscribers
        assert all(state[1] for state in subscriber.link_states())
    finally:
        publisher.close()
        subscriber.close()


def test_an_unreachable_redis_is_down_in_link_states_with_the_reason(redis_server):
    ((engine, _),) = started(1, url=redis_server.url)
    try:
        assert all(state[1] for state in engine.link_states())
        redis_server.stop()
        started_at = time.monotonic()
        wait_until(lambda: not engine.link_states()[0][1], timeout=5)
        assert time.monotonic() - started_at < 4
        assert 'Connection refused' in engine.link_states()[0][3]
        err, _ = engine_call(engine.publish, 'room/1', 1)
        assert err.name == 'BrokerError'
        redis_server.start()
        wait_until(lambda: engine.link_states()[0][1], timeout=10)
    finally:
        engine.close()
