"""sc-broker's main.js pub/sub cases (B-132, B-167..B-176, the stub middleware of its tests) and the
broker `publish` event of X-39, on gsc's broker: a BrokerServer with that middleware,
reached through a worker's exchange (the worker side of gsc is sc-broker's client).

Everything runs in this process over unix sockets in tmp_path; servers stop at teardown.
"""

import json
import time

import gevent
import pytest

from conftest import handshake, recv_json, wait_until
from gsc.cluster.brokerserver import BrokerServer
from gsc.core.emitter import EventEmitter
from gsc.cluster.brokerclient import BrokerEngine
from gsc.core.middleware import MIDDLEWARE_PUBLISH_IN, MIDDLEWARE_SUBSCRIBE

pytestmark = pytest.mark.timeout(15)


class StubBroker(EventEmitter):
    """The broker a BrokerServer reports to, recording subscribe/unsubscribe/publish."""

    def __init__(self):
        EventEmitter.__init__(self)
        self.id = 0
        self.events = []
        for name in ('subscribe', 'unsubscribe', 'publish', 'warning'):
            self.on(name, lambda *args, _name=name: self.events.append((_name,) + args))


def install_stub_middleware(server):
    """sc-broker's stub middleware: badChannel refused, delayedChannel 500 ms late, silentChannel publish
    refused, 'test message' rewritten, and a throwing middleware added then removed."""
    def subscribe(req, next_):
        if req.channel == 'badChannel':
            next_(Exception('bad channel'))
        elif req.channel == 'delayedChannel':
            gevent.spawn_later(0.5, next_)
        else:
            next_()

    def publish_in(req, next_):
        if req.channel == 'silentChannel':
            next_(Exception('silent channel'))
        elif req.command['value'] == 'test message':
            req.command['value'] = 'transformed test message'
            next_()
        elif req.channel == 'delayedChannel':
            gevent.spawn_later(0.5, next_)
        else:
            next_()

    def throwing(req, next_):
        raise RuntimeError('this middleware was removed and must never run')
    for type_, fn in ((MIDDLEWARE_SUBSCRIBE, subscribe), (MIDDLEWARE_PUBLISH_IN, publish_in)):
        server.middleware.add(type_, throwing)
        server.middleware.add(type_, fn)
        server.middleware.remove(type_, throwing)


@pytest.fixture
def broker(tmp_path):
    server = BrokerServer(StubBroker(), str(tmp_path / 'b0'), 's3cret', expiry_accuracy=200)
    install_stub_middleware(server)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def worker(broker, make_server):
    engine = BrokerEngine([broker.socket_path], 's3cret', ack_timeout=2000)
    server = make_server({}, engine=engine)
    wait_until(lambda: server.is_ready)
    return server


def subscribe_and_wait(exchange, name):
    """exchange.subscribe(name); (event, elapsed seconds, err) once it settles."""
    results = []
    started = time.monotonic()
    channel = exchange.subscribe(name)
    channel.on('subscribe', lambda _n: results.append(('subscribe', time.monotonic() - started, None)))
    channel.on('subscribeFail', lambda err, _n: results.append(('subscribeFail', time.monotonic() - started, err)))
    wait_until(lambda: results)
    return results[0]


def publish_and_wait(exchange, channel, data):
    results = []
    started = time.monotonic()
    exchange.publish(channel, data, lambda err: results.append((err, time.monotonic() - started)))
    wait_until(lambda: results)
    return results[0]


def test_subscribe_state_and_middleware(worker, broker):
    """B-167: no subscriptions at first; B-168: subscribe('foo') succeeds; B-169: subscribing
    again keeps isSubscribed true and subscriptions ['foo']; B-170: badChannel fails with
    'bad channel' and is not listed; B-171: delayedChannel settles no earlier than 500 ms;
    B-172: unsubscribing a never-subscribed channel is no error."""
    ex = worker.exchange
    assert ex.subscriptions() == []
    event, _, err = subscribe_and_wait(ex, 'foo')
    assert (event, err) == ('subscribe', None)
    again = ex.subscribe('foo')
    assert again.state == 'subscribed' and ex.is_subscribed('foo') and ex.subscriptions() == ['foo']
    event, _, err = subscribe_and_wait(ex, 'badChannel')
    assert event == 'subscribeFail' and 'bad channel' in str(err)
    assert not ex.is_subscribed('badChannel') and 'badChannel' not in ex.subscriptions()
    event, elapsed, err = subscribe_and_wait(ex, 'delayedChannel')
    assert event == 'subscribe' and elapsed >= 0.5
    assert ex.unsubscribe('bar') is None
    assert sorted(ex.subscriptions()) == ['delayedChannel', 'foo']
    assert [e for e in broker.broker.events if e[0] == 'subscribe'] == [
        ('subscribe', 'foo'), ('subscribe', 'delayedChannel')]


def test_publish_middleware(worker, broker):
    """B-173: publish('bar', ['a','b']) -> no error; B-174: silentChannel -> 'silent channel';
    B-175: delayedChannel -> no earlier than 500 ms; B-176: 'test message' is rewritten to
    'transformed test message' (gsc's publish callback carries only the error: the rewrite is
    seen by the subscribers); X-39: the broker emits `publish(channel, data)` per publish."""
    ex = worker.exchange
    received = []
    subscribe_and_wait(ex, 'bar')
    ex.watch('bar', received.append)
    assert publish_and_wait(ex, 'bar', ['a', 'b'])[0] is None
    err, _ = publish_and_wait(ex, 'silentChannel', ['a', 'b'])
    assert err is not None and 'silent channel' in str(err)
    err, elapsed = publish_and_wait(ex, 'delayedChannel', ['a', 'b'])
    assert err is None and elapsed >= 0.5
    assert publish_and_wait(ex, 'bar', 'test message')[0] is None
    wait_until(lambda: len(received) == 2)
    assert received == [['a', 'b'], 'transformed test message']
    publishes = [e for e in broker.broker.events if e[0] == 'publish']
    assert publishes == [('publish', 'bar', ['a', 'b']), ('publish', 'delayedChannel', ['a', 'b']),
                         ('publish', 'bar', 'transformed test message')]


def test_broker_middleware_reaches_client_sockets(worker, raw):
    """sc-broker's stub middleware seen from a client: the broker's subscribe refusal becomes the #subscribe
    error; its publishIn rewrite reaches the subscribed sockets."""
    client = raw(worker)
    handshake(client)
    client.send('{"event":"#subscribe","data":{"channel":"badChannel"},"cid":2}')
    answer = recv_json(client)
    assert answer['rid'] == 2 and 'bad channel' in answer['error']['message']
    client.send('{"event":"#subscribe","data":{"channel":"room"},"cid":3}')
    assert recv_json(client) == {'rid': 3}
    client.send(json.dumps({'event': '#publish', 'data': {'channel': 'room', 'data': 'test message'}, 'cid': 4}))
    packets = [recv_json(client), recv_json(client)]
    assert {'event': '#publish', 'data': {'channel': 'room', 'data': 'transformed test message'}} in packets
    assert {'rid': 4} in packets


def test_a_set_value_is_captured_at_call_time(worker):
    """B-132: set(key, obj, callback) then mutating obj right after the call -> get(key) is the
    value as it was at the call."""
    ex = worker.exchange
    obj = {'foo': 'bar'}
    done = []
    ex.set('someUniqueKey', obj, True, lambda err, value: done.append((err, value)))
    obj['foo'] = 'changed'
    obj['extra'] = 1
    wait_until(lambda: done)
    assert done[0] == (None, {'foo': 'bar'})
    assert json.dumps(ex.get('someUniqueKey')) == '{"foo": "bar"}'


def test_set_without_get_value_and_nested_callbacks(worker):
    """B-181: set without the getValue flag -> the callback's value is None (undefined);
    B-183: a set issued inside a pending get's callback succeeds (err None)."""
    ex = worker.exchange
    results = []
    ex.set(['d', 'e', 'f'], 'This is a value', False, lambda err, value: results.append((err, value)))
    wait_until(lambda: results)
    assert results == [(None, None)]
    nested = []
    ex.get(['g', 'h', 'i'], lambda err, value: ex.set(
        ['g', 'h', 'i'], 'v', False, lambda err2, _value: nested.append((err, value, err2))))
    wait_until(lambda: nested)
    assert nested == [(None, None, None)]
    assert ex.get(['g', 'h', 'i']) == 'v'


def test_publishes_survive_a_broker_restart_with_retries(tmp_path, make_server, raw):
    """B-187: a subscriber on foo; 300 publishes 1 ms apart, each retried 100 ms after a
    failure; the broker is stopped at the 100th and started again -> the subscriber receives
    every message exactly once, in order."""
    path = str(tmp_path / 'b0')
    brokers = [BrokerServer(StubBroker(), path, 's3cret')]
    brokers[0].start()
    try:
        server = make_server({}, engine=BrokerEngine([path], 's3cret', ack_timeout=2000))
        wait_until(lambda: server.is_ready)
        client = raw(server)
        handshake(client)
        client.send('{"event":"#subscribe","data":{"channel":"foo"},"cid":2}')
        assert recv_json(client) == {'rid': 2}
        failures = []

        def publish(n):
            while True:
                done = []
                server.exchange.publish('foo', 'hello %d' % n, done.append)
                wait_until(lambda: done, timeout=5)
                if done[0] is None:
                    return
                failures.append(n)
                gevent.sleep(0.1)

        def restart():
            brokers[0].stop()
            gevent.sleep(0.2)
            brokers[0] = BrokerServer(StubBroker(), path, 's3cret')
            brokers[0].start()
        for n in range(300):
            if n == 100:
                gevent.spawn(restart)
            publish(n)
            gevent.sleep(0.001)
        got = []
        with gevent.Timeout(10):
            while len(got) < 300:
                got.append(recv_json(client)['data']['data'])
        assert got == ['hello %d' % n for n in range(300)]
        assert failures  # the restart really made publishes fail and be retried
    finally:
        brokers[0].stop()
