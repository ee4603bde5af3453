"""The Redis engine's start and recovery: a worker that cannot reach Redis fails
its start with one error naming the URL; a loss is one warning naming the URL, the return one
log line; publishes to a Redis that stops answering are bounded in time and in number."""

import logging
import socket
import time

import gevent
import gevent.event
import pytest

from conftest import RedisServer, handshake, recv_json, wait_until
from gsc.engines.redis import RedisEngine
from master_harness import free_port, start_cluster

pytestmark = pytest.mark.timeout(40)


@pytest.fixture
def redis_later():
    """A private redis-server not started yet (``url``, ``start()``); stopped at teardown."""
    server = RedisServer()
    if server.binary is None:
        pytest.skip('redis-server is not installed (.ci/run installs it)')
    yield server
    server.stop()


def test_a_worker_fails_its_start_when_redis_is_unreachable(request):
    """Nothing listens at the URL: the start fails within 3/4 of startTimeout with one error
    naming the URL (its password hidden), and the master exits unsuccessfully."""
    port = free_port()
    url = 'redis://:hunter2@127.0.0.1:%d/0' % port
    started = time.monotonic()
    master = start_cluster(request, {
        'workers': 1, 'brokers': 0, 'startTimeout': 4000, 'brokerEngine': 'redis',
        'workerController': 'tests.controllers.pubsub_worker',
        'brokerEngineOptions': {'url': url}}, ready=False)
    fail = master.expect('fail', timeout=20)
    assert fail['name'] == 'BrokerError' and fail['origin']['type'] == 'Worker'
    assert fail['message'].startswith('Could not connect to Redis at redis://:***@127.0.0.1:%d/0 '
                                      'within 3000 ms: ' % port)
    assert 'hunter2' not in fail['message'] and '\n' not in fail['stack']
    assert master.expect('exit', timeout=20)['ok'] is False
    assert time.monotonic() - started < 20
    assert not any(e['event'] == 'ready' for e in master.events)


def test_a_lost_redis_is_one_warning_and_its_return_one_line(redis_server, make_server, raw,
                                                             caplog):
    """Redis killed then started again: one warning naming the URL, one INFO line when it is
    back, and the subscription carries messages again."""
    server = make_server({'brokerEngine': 'redis', 'brokerEngineOptions': {'url': redis_server.url}})
    wait_until(lambda: server.is_ready)
    warnings = []
    server.on('warning', warnings.append)
    subscriber = raw(server)
    handshake(subscriber)
    subscriber.send('{"event":"#subscribe","data":{"channel":"room"},"cid":2}')
    assert recv_json(subscriber) == {'rid': 2}
    with caplog.at_level(logging.INFO, logger='gsc.engines.redis'):
        redis_server.stop()
        wait_until(lambda: warnings)
        redis_server.start()
        wait_until(lambda: any('Reconnected' in r.getMessage() for r in caplog.records), timeout=10)
    assert len(warnings) == 1
    assert str(warnings[0]).startswith('Lost the connection to Redis at %s - ' % redis_server.url)
    lines = [r for r in caplog.records if r.name == 'gsc.engines.redis']
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert lines[0].getMessage().startswith('Reconnected to Redis at %s after ' % redis_server.url)
    server.exchange.publish('room', 'back')
    assert recv_json(subscriber)['data'] == {'channel': 'room', 'data': 'back'}


def test_a_standalone_server_warns_once_then_starts_when_redis_comes(redis_later, make_server,
                                                                     caplog):
    """A standalone server has no start to fail: one warning naming the URL, then ready as soon
    as Redis listens."""
    with caplog.at_level(logging.WARNING):
        server = make_server({'brokerEngine': 'redis',
                              'brokerEngineOptions': {'url': redis_later.url}})
        wait_until(lambda: any(r.name == 'gsc.server.scserver' for r in caplog.records))
        gevent.sleep(0.5)  # several attempts later
        assert not server.is_ready
        redis_later.start()
        wait_until(lambda: server.is_ready, timeout=10)
    lines = [r.getMessage() for r in caplog.records if r.name == 'gsc.server.scserver']
    assert len(lines) == 1
    assert lines[0].startswith('Could not connect to Redis at %s - trying again: ' % redis_later.url)


def test_publishes_to_a_silent_redis_are_bounded():
    """A 'Redis' that accepts connections and never answers: each publish fails within
    connectTimeout, and past poolSize at once, so none holds a greenlet for long."""
    silent = socket.socket()
    silent.bind(('127.0.0.1', 0))
    silent.listen(16)
    engine = RedisEngine('redis://127.0.0.1:%d/0' % silent.getsockname()[1],
                         connect_timeout=500, max_connections=2)
    errors = []
    try:
        started = time.monotonic()
        publishes = [gevent.spawn(engine.publish, 'room', n, errors.append) for n in range(6)]
        assert gevent.joinall(publishes, timeout=10) and len(errors) == 6
        assert time.monotonic() - started < 5
        assert all(err is not None and err.name == 'BrokerError' for err in errors)
        busy = [str(err) for err in errors if 'are all busy (poolSize)' in str(err)]
        assert len(busy) == 4
        assert all('is unreachable' in str(err) for err in errors[-2:])
    finally:
        engine.close()
        silent.close()


def test_the_subscriber_connection_has_tcp_keepalive(redis_server):
    """The subscriber waits for messages without a timeout: TCP keepalive (idle 30 s, 3 probes
    5 s apart) is what tells it that a Redis host vanished without closing the connection."""
    engine = RedisEngine(redis_server.url)
    ready = gevent.event.Event()
    try:
        engine.start(lambda channel, data: None, ready.set)
        assert ready.wait(5)
        sock = engine._subscribers[''].pubsub.connection._sock
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert [sock.getsockopt(socket.IPPROTO_TCP, option) for option in (
            socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT)] == [30, 5, 3]
    finally:
        engine.close()
