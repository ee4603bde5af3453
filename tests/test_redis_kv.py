"""The key/value store on the Redis engine: the broker's answers and errors (the same
commands run on an in-process DataMap), atomic per call under concurrent callers on two
engines, expiry, bounds, and through exchange.set/get on two gsc instances."""

import json
import random
import time

import gevent
import pytest

from conftest import engine_call, wait_until
from gsc.core import kv
from gsc.core.datamap import DataMap
from gsc.errors import BrokerError, InvalidArgumentsError, ResourceLimitError

pytestmark = pytest.mark.timeout(60)


def kv_call(engine, action, **fields):
    return engine_call(engine.kv, action, fields)


def reference(data_map, action, fields):
    """``(err, value)`` of the broker's own store."""
    try:
        return None, kv.execute(data_map, action, fields)
    except InvalidArgumentsError as exc:
        return exc, None


KEYS = ['a', 'b', 3, '3', ['a', 'x'], ['a', 0], ['b', 'c', 'd'], ['l', 1], 'l', ['l', '0']]
VALUES = [1, 'text', None, [1, 2, 3], {'k': [1, {'z': 2}], '2': 'two', 'n': None}, [], {}, 0]


def random_command(rng):
    key = rng.choice(KEYS)
    action = rng.choice(['set', 'get', 'getRange', 'getAll', 'count', 'add', 'concat', 'remove',
                         'removeRange', 'splice', 'pop', 'hasKey', 'extractKeys',
                         'extractValues', 'expire', 'unexpire', 'getExpiry'])
    fields = {'key': key}
    if action in ('set', 'add', 'concat'):
        fields['value'] = rng.choice(VALUES)
    if action in ('set', 'concat', 'remove', 'pop', 'splice'):
        fields['getValue'] = True
    if action in ('getRange', 'removeRange'):
        fields.update(fromIndex=rng.choice([0, 1, 'k']), toIndex=rng.choice([None, 2, 'n']))
    if action == 'splice':
        fields.update(index=rng.choice([0, 1, -1]), count=rng.choice([None, 1]),
                      items=rng.choice([None, ['new']]))
    if action in ('expire', 'unexpire'):
        fields = {'keys': rng.sample(KEYS, 2), 'value': 1000}
    return action, fields


def test_every_command_answers_as_the_broker_store(redis_engines):
    (one, _), (other, _) = redis_engines(2)
    data_map = DataMap()
    rng = random.Random(7)
    for n in range(400):
        action, fields = random_command(rng)
        expected_err, expected = reference(data_map, action, fields)
        err, value = kv_call(one if n % 2 else other, action, **fields)
        if expected_err is not None:
            assert type(err) is type(expected_err) and str(err) == str(expected_err), (action, fields)
            continue
        assert err is None, (action, fields, err)
        if action == 'getExpiry' and expected is not None:
            assert value == pytest.approx(expected, abs=1)
        else:
            assert value == expected, (n, action, fields)
    assert kv_call(one, 'getAll')[1] == data_map.get_all()


def test_bad_commands_fail_with_the_broker_errors(redis_engines):
    ((engine, _),) = redis_engines(1)
    for action, fields in [('set', {'key': {'bad': 1}, 'value': 1}), ('get', {}),
                           ('expire', {'keys': 'a', 'value': 1}), ('nothing', {'key': 'a'}),
                           ('splice', {'key': 'a', 'index': 'x'}), ('expire', {'keys': ['a']})]:
        expected_err, _ = reference(DataMap(), action, fields)
        err, _ = kv_call(engine, action, **fields)
        assert isinstance(err, InvalidArgumentsError) and str(err) == str(expected_err)


def test_calls_are_atomic_across_engines(redis_engines):
    (one, _), (other, _) = redis_engines(2)
    indices = []

    def adder(engine, n):
        for i in range(25):
            err, index = kv_call(engine, 'add', key=['list'], value=[n, i])
            assert err is None
            indices.append(index)
    gevent.joinall([gevent.spawn(adder, one if n % 2 else other, n) for n in range(8)], raise_error=True)
    assert sorted(indices) == list(range(200))
    items = kv_call(one, 'get', key='list')[1]
    assert sorted(map(tuple, items)) == sorted((n, i) for n in range(8) for i in range(25))


def test_insertion_order_expiry_and_remove_all(redis_engines):
    (one, _), (other, _) = redis_engines(2)
    for key in ('z', '2', 'a', '1'):
        assert kv_call(one, 'set', key=key, value=key)[0] is None
    kv_call(other, 'remove', key='z')
    kv_call(other, 'set', key='z', value='again')
    assert list(kv_call(one, 'getAll')[1]) == ['1', '2', 'a', 'z']
    kv_call(one, 'expire', keys=[['a']], value=1)
    assert kv_call(other, 'getExpiry', key='a')[1] == round(time.time()) + 1
    wait_until(lambda: kv_call(other, 'hasKey', key='a')[1] is False, timeout=4)
    assert kv_call(other, 'getAll')[1] == {'1': '1', '2': '2', 'z': 'again'}
    kv_call(one, 'removeAll')
    assert kv_call(other, 'getAll')[1] == {}


def test_purge_drops_an_expired_value_nobody_reads(redis_engines, redis_server):
    import redis
    ((engine, _),) = redis_engines(1)
    kv_call(engine, 'set', key='gone', value='x' * 100)
    kv_call(engine, 'expire', keys=['gone'], value=1)
    direct = redis.Redis(port=redis_server.port)
    wait_until(lambda: not direct.hexists('gsc:{#kv}:store', '"gone"'), timeout=5)
    assert direct.zcard('gsc:{#kv}:expiry') == 0


def test_an_entry_past_the_bound_fails_and_keeps_the_old_value(redis_engines):
    ((engine, _),) = redis_engines(1)
    engine._store.max_bytes = 1000
    kv_call(engine, 'set', key='big', value='small')
    err, _ = kv_call(engine, 'set', key=['big'], value='x' * 2000)
    assert isinstance(err, ResourceLimitError) and 'more than the 1000 bytes' in str(err)
    assert kv_call(engine, 'get', key='big')[1] == 'small'


def test_unreachable_redis_fails_with_broker_error(redis_engines, redis_server):
    ((engine, _),) = redis_engines(1, connect_timeout=500)
    redis_server.stop()
    err, _ = kv_call(engine, 'get', key='a')
    assert isinstance(err, BrokerError) and 'Failed the key/value get' in str(err)


def test_exchange_store_shared_by_two_instances(request, redis_server):
    from master_harness import start_cluster
    from websockets.sync.client import connect
    instances = [start_cluster(request, {
        'workers': 1, 'brokers': 0, 'workerController': 'tests.controllers.pubsub_worker',
        'brokerEngine': 'redis', 'brokerEngineOptions': {'url': redis_server.url}}, ready=False)
        for _ in range(2)]
    for master in instances:
        master.ready(timeout=30)
    sockets = []
    for master in instances:
        ws = connect('ws://127.0.0.1:%d/socketcluster/' % master.port, open_timeout=5, legacy=True)
        request.addfinalizer(ws.close)
        ws.send('{"event":"#handshake","data":{},"cid":1}')
        assert json.loads(ws.recv(5))['event'] == 'worker'
        assert json.loads(ws.recv(5))['rid'] == 1
        sockets.append(ws)

    def call(ws, cid, method, *args):
        ws.send(json.dumps({'event': 'kv', 'data': {'method': method, 'args': list(args)}, 'cid': cid}))
        answer = json.loads(ws.recv(5))
        assert answer['rid'] == cid
        return answer
    a, b = sockets
    assert 'error' not in call(a, 2, 'set', ['users', 'alice'], {'age': 30})
    assert call(b, 3, 'get', ['users', 'alice', 'age'])['data'] == 30
    assert call(b, 4, 'add', ['list'], 'x')['data'] == 0
    assert call(a, 5, 'add', ['list'], 'y')['data'] == 1
    assert call(a, 6, 'get', ['list'])['data'] == ['x', 'y']
    error = call(a, 7, 'set', {'bad': 'key'}, 1)['error']
    assert error['name'] == 'InvalidArgumentsError' and 'a key must be a str or an int' in error['message']
    assert call(b, 8, 'get', 'nothing') == {'rid': 8, 'data': None}
