"""Channel presence on the Redis engine: engines against a private
redis-server, two engines standing for two machines sharing one presence per channel."""

import time

import pytest
import redis

from conftest import engine_call as call
from conftest import wait_until
from gsc.engines.redis import PRESENCE_TTL
from gsc.errors import BrokerError
from gsc.core.presence import PresenceRules, events_channel

PRESENCE = {'room/*': {'maxMembers': 3}, 'quiet/*': {'joinLeave': False}}


@pytest.fixture
def engines(redis_engines):
    """``engines(count) -> [(engine, received)]`` with PRESENCE rules."""
    return lambda count=1: redis_engines(count, presence_rules=PresenceRules(PRESENCE))


def join(engine, channel, socket_id, user, worker=0):
    err, _ = call(engine.presence_join, channel, socket_id, {'user': user, 'worker': worker})
    return err


def members(engine, channel):
    err, result = call(engine.presence, channel)
    assert err is None, err
    return result


def events(received):
    return [(data['event'], data['socketId'], data['user']) for _, data, _ in received]


def test_members_and_events_across_two_engines(engines):
    (a, on_a), (b, on_b) = engines(2)
    call(b.subscribe, events_channel('room/1'))
    assert join(a, 'room/1', 'sa', 'ann', worker=1) is None
    assert join(b, 'room/1', 'sb', None, worker=2) is None
    expected = {'sa': {'user': 'ann', 'worker': 1}, 'sb': {'user': None, 'worker': 2}}
    assert members(a, 'room/1') == members(b, 'room/1') == expected
    a.presence_leave('room/1', 'sa')
    assert members(b, 'room/1') == {'sb': {'user': None, 'worker': 2}}
    wait_until(lambda: len(on_b) == 3)
    assert events(on_b) == [('join', 'sa', 'ann'), ('join', 'sb', None), ('leave', 'sa', 'ann')]
    assert on_b[0][0] == events_channel('room/1') and on_b[0][1]['worker'] == 1
    assert on_a == []


def test_join_leave_off_publishes_no_events_and_joining_twice_is_one_member(engines, redis_server):
    [(a, on_a)] = engines(1)
    call(a.subscribe, events_channel('quiet/1'))
    call(a.subscribe, events_channel('room/2'))
    assert join(a, 'quiet/1', 's1', 'ann') is None
    a.presence_leave('quiet/1', 's1')
    assert join(a, 'room/2', 's1', 'ann') is None
    assert join(a, 'room/2', 's1', 'ann') is None
    wait_until(lambda: on_a)
    assert events(on_a) == [('join', 's1', 'ann')]
    assert members(a, 'room/2') == {'s1': {'user': 'ann', 'worker': 0}}


def test_max_members_is_shared_by_the_engines(engines):
    (a, _), (b, _) = engines(2)
    for n in range(3):
        assert join(a if n % 2 else b, 'room/3', 's%d' % n, 'u%d' % n) is None
    err = join(b, 'room/3', 'late', 'zed')
    assert isinstance(err, BrokerError) and 'full (maxMembers is 3)' in str(err)
    a.presence_leave('room/3', 's1')
    assert join(b, 'room/3', 'late', 'zed') is None
    assert sorted(members(a, 'room/3')) == ['late', 's0', 's2']


def test_a_channel_without_presence_is_refused(engines):
    [(a, _)] = engines(1)
    assert 'has no presence' in str(join(a, 'lobby', 's1', 'ann'))
    err, result = call(a.presence, 'lobby')
    assert isinstance(err, BrokerError) and result is None


def test_a_vanished_engines_members_expire_with_leaves(engines):
    (a, _), (b, on_b) = engines(2)
    call(b.subscribe, events_channel('room/4'))
    assert join(a, 'room/4', 'gone', 'ann') is None
    assert join(b, 'room/4', 'stays', 'bob') is None
    started = time.monotonic()
    a.close()  # no leave: like a killed worker
    wait_until(lambda: list(members(b, 'room/4')) == ['stays'], timeout=PRESENCE_TTL / 1000.0 + 3,
               interval=0.2)
    assert time.monotonic() - started > PRESENCE_TTL / 1000.0 - 1  # b's refreshes kept its own
    assert ('leave', 'gone', 'ann') in events(on_b)


def test_members_come_back_after_redis_loses_them(engines, redis_server):
    [(a, _)] = engines(1)
    assert join(a, 'room/5', 's1', 'ann') is None
    redis.Redis(port=redis_server.port).flushall()
    assert members(a, 'room/5') == {}
    wait_until(lambda: members(a, 'room/5') == {'s1': {'user': 'ann', 'worker': 0}}, timeout=4,
               interval=0.2)
