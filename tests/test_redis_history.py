"""Channel history on the Redis engine: engines against a private
redis-server, two engines standing for two machines sharing one history."""

import os
import signal
import time

import gevent
import pytest
import redis

from conftest import engine_call as call
from conftest import wait_until
from gsc.errors import BrokerError, InvalidArgumentsError
from gsc.core.history import HistoryRules

HISTORY = {'room/*': {'size': 5, 'ttl': 300}, 'short/*': {'size': 100, 'ttl': 0.5},
           'small/*': {'size': 100, 'maxBytes': 30}}


@pytest.fixture
def engines(redis_engines):
    """``engines(count, option, connect_timeout) -> [(engine, received)]`` with HISTORY rules."""
    return lambda count=1, option=None, connect_timeout=5000: redis_engines(
        count, history_rules=HistoryRules(option or HISTORY), connect_timeout=connect_timeout)


def history(engine, channel, since=None, epoch=None, limit=None):
    err, result = call(engine.history, channel, since, epoch, limit)
    assert err is None, err
    return result


def publish(engine, channel, data):
    err, _ = call(engine.publish, channel, data)
    assert err is None, err


def offsets(result):
    return [p['offset'] for p in result['publications']]


def test_two_engines_share_one_history_with_one_offset_sequence(engines):
    (a, on_a), (b, on_b) = engines(2)
    for engine in (a, b):
        call(engine.subscribe, 'room/1')
    for n in range(8):
        publish(a if n % 2 else b, 'room/1', {'n': n})
    wait_until(lambda: len(on_a) == 8 and len(on_b) == 8)
    epoch = on_a[0][2][1]
    assert on_a == on_b
    assert [(m[1]['n'], m[2]) for m in on_a] == [(n, (n + 1, epoch)) for n in range(8)]
    for engine in (a, b):
        result = history(engine, 'room/1')
        assert result['epoch'] == epoch and result['offset'] == 8 and result['recovered']
        assert result['publications'] == [{'offset': n + 1, 'data': {'n': n}} for n in range(3, 8)]
    assert offsets(history(b, 'room/1', limit=2)) == [7, 8]
    assert history(b, 'room/1', limit=0)['publications'] == []


def test_plain_channels_stay_plain_pubsub(engines, redis_server):
    [(a, on_a)] = engines(1)
    call(a.subscribe, 'lobby')
    publish(a, 'lobby', 'hi')
    wait_until(lambda: on_a)
    assert on_a == [('lobby', 'hi', None)]
    assert redis.Redis(port=redis_server.port).keys('*') == []
    err, _ = call(a.history, 'lobby', None, None, None)
    assert isinstance(err, BrokerError) and 'lobby has no history' in str(err)


def test_recovery_after_a_position(engines):
    [(a, _)] = engines(1)
    for n in range(4):
        publish(a, 'room/2', n)
    epoch = history(a, 'room/2')['epoch']
    result = history(a, 'room/2', since=1, epoch=epoch)
    assert result['recovered'] and offsets(result) == [2, 3, 4]
    assert [p['data'] for p in result['publications']] == [1, 2, 3]
    up_to_date = history(a, 'room/2', since=4, epoch=epoch)
    assert up_to_date['recovered'] and up_to_date['publications'] == [] and up_to_date['offset'] == 4
    for n in range(4, 10):  # size 5: offsets 6..10 kept
        publish(a, 'room/2', n)
    assert offsets(history(a, 'room/2', since=5, epoch=epoch)) == [6, 7, 8, 9, 10]
    too_old = history(a, 'room/2', since=4, epoch=epoch)
    assert not too_old['recovered'] and too_old['publications'] == [] and too_old['offset'] == 10
    other_epoch = history(a, 'room/2', since=9, epoch='elsewhere')
    assert not other_epoch['recovered'] and other_epoch['epoch'] == epoch
    assert not history(a, 'room/2', since=11, epoch=epoch)['recovered']
    assert not history(a, 'room/2', since=2 ** 70, epoch=epoch)['recovered']


def test_bad_read_arguments_are_refused(engines):
    [(a, _)] = engines(1)
    for since, epoch, limit in ((-1, 'e', None), (True, 'e', None), (1, None, None), (None, None, 'x')):
        err, result = call(a.history, 'room/3', since, epoch, limit)
        assert isinstance(err, InvalidArgumentsError) and result is None


def test_epoch_changes_after_flushall(engines, redis_server):
    (a, _), (b, _) = engines(2)
    publish(a, 'room/4', 'before')
    before = history(b, 'room/4')
    redis.Redis(port=redis_server.port).flushall()
    after_flush = history(b, 'room/4', since=1, epoch=before['epoch'])
    assert not after_flush['recovered'] and after_flush['epoch'] != before['epoch']
    assert after_flush['offset'] == 0
    publish(a, 'room/4', 'after')
    result = history(a, 'room/4', since=0, epoch=after_flush['epoch'])
    assert result['recovered'] and result['publications'] == [{'offset': 1, 'data': 'after'}]


def test_ttl_drops_publications_then_the_whole_history(engines, redis_server):
    [(a, _)] = engines(1)
    publish(a, 'short/1', 'old')
    first = history(a, 'short/1')
    assert offsets(first) == [1]
    gevent.sleep(0.3)
    publish(a, 'short/1', 'newer')
    gevent.sleep(0.3)  # 'old' is past the ttl, 'newer' is not
    result = history(a, 'short/1', since=0, epoch=first['epoch'])
    assert not result['recovered']
    assert history(a, 'short/1')['publications'] == [{'offset': 2, 'data': 'newer'}]
    assert offsets(history(a, 'short/1', since=1, epoch=first['epoch'])) == [2]
    client = redis.Redis(port=redis_server.port)
    wait_until(lambda: client.keys('gsc:{short/1}:history:*') == [], timeout=3)  # the keys expire with the ttl
    assert history(a, 'short/1')['epoch'] != first['epoch']


def test_max_bytes_keeps_the_newest_publications_within_the_bytes(engines):
    [(a, _)] = engines(1)
    for n in range(6):
        publish(a, 'small/1', 'x' * 8)  # 10 bytes of JSON each: 3 fit in 30
    assert offsets(history(a, 'small/1')) == [4, 5, 6]
    publish(a, 'small/1', 'y' * 40)  # larger than maxBytes on its own: not kept
    result = history(a, 'small/1')
    assert result['offset'] == 7 and result['publications'] == []
    publish(a, 'small/1', 'z')
    assert offsets(history(a, 'small/1')) == [8]


def test_a_redis_that_is_gone_fails_history_calls(engines, redis_server):
    [(a, _)] = engines(1)
    publish(a, 'room/5', 1)
    redis_server.stop()
    err, _ = call(a.publish, 'room/5', 2)
    assert isinstance(err, BrokerError) and 'unreachable' in str(err)
    err, result = call(a.history, 'room/5', None, None, None)
    assert isinstance(err, BrokerError) and 'room/5' in str(err) and result is None


def test_a_redis_that_hangs_fails_calls_after_connect_timeout(engines, redis_server):
    [(a, _)] = engines(1, connect_timeout=500)
    publish(a, 'room/6', 1)
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        err, _ = call(a.history, 'room/6', None, None, None)
        assert isinstance(err, BrokerError) and 'room/6' in str(err)
        err, _ = call(a.publish, 'room/6', 2)
        assert isinstance(err, BrokerError)
        assert time.monotonic() - started < 5  # two calls of 0.5 s each, on a busy machine
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    assert offsets(history(a, 'room/6'))[:1] == [1]  # Redis may still run the timed-out publish
