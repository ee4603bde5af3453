"""Brokers relay pub/sub between workers and keep the key/value store
(B-014..B-016, B-131..B-187, X-39), driven in one process."""

import json

import gevent
import pytest

from conftest import handshake, recv_json, wait_until
from gsc.cluster.brokerserver import BrokerServer
from gsc.core.emitter import EventEmitter
from gsc.cluster.brokerclient import BrokerEngine
from gsc.core.hasher import hash_key


class FakeBroker(EventEmitter):
    """The broker object a BrokerServer reports to (the process around it is not needed here)."""

    def __init__(self, id_):
        EventEmitter.__init__(self)
        self.id = id_
        self.events = []
        for name in ('subscribe', 'unsubscribe', 'publish'):
            self.on(name, lambda *args, _name=name: self.events.append((_name,) + args))


@pytest.fixture
def brokers(tmp_path):
    started = []

    def start(count=2, secret='s3cret'):
        for i in range(count):
            broker = FakeBroker(i)
            server = BrokerServer(broker, str(tmp_path / ('b%d' % i)), secret, expiry_accuracy=200)
            server.start()
            started.append(server)
        return started
    yield start
    for server in started:
        server.stop()


def worker(make_server, servers, secret='s3cret'):
    engine = BrokerEngine([s.socket_path for s in servers], secret, ack_timeout=2000)
    server = make_server({}, engine=engine)
    wait_until(lambda: server.is_ready)
    return server


def subscribed_client(raw, server, channel):
    client = raw(server)
    handshake(client)
    client.send(json.dumps({'event': '#subscribe', 'data': {'channel': channel}, 'cid': 2}))
    assert recv_json(client) == {'rid': 2}
    return client


def test_channels_are_sharded_by_hash(brokers, make_server, raw):
    """X-39: with 2 brokers foo and wch live on broker 0, a on broker 1; first/last subscriber events."""
    servers = brokers(2)
    w = worker(make_server, servers)
    clients = [subscribed_client(raw, w, name) for name in ('foo', 'wch', 'a')]
    wait_until(lambda: len(servers[0].broker.events) + len(servers[1].broker.events) == 3)
    assert servers[0].broker.events == [('subscribe', 'foo'), ('subscribe', 'wch')]
    assert servers[1].broker.events == [('subscribe', 'a')]
    assert hash_key('foo', 2) == 0 and hash_key('a', 2) == 1
    clients[2].send('{"event":"#unsubscribe","data":"a"}')
    wait_until(lambda: ('unsubscribe', 'a') in servers[1].broker.events)


def test_a_publish_reaches_every_worker_once_and_in_order(brokers, make_server, raw):
    """: publisher on one worker, subscribers on both, exactly once, in order."""
    servers = brokers(2)
    w1, w2 = worker(make_server, servers), worker(make_server, servers)
    subscribers = [subscribed_client(raw, w, 'room') for w in (w1, w1, w2, w2)]
    publisher = raw(w1)
    handshake(publisher)
    for n in range(100):
        publisher.send(json.dumps({'event': '#publish', 'data': {'channel': 'room', 'data': n}}))
    for client in subscribers:
        assert [recv_json(client)['data']['data'] for _ in range(100)] == list(range(100))
    subscribers[2].send('{"event":"#unsubscribe","data":"room"}')
    subscribers[3].send('{"event":"#unsubscribe","data":"room"}')
    gevent.sleep(0.1)
    w1.exchange.publish('room', 'last')
    assert recv_json(subscribers[0])['data']['data'] == 'last'
    assert servers[hash_key('room', 2)].subscriptions != {}
    for client in subscribers[2:]:
        client.send('{"event":"#subscribe","data":{"channel":"probe"},"cid":7}')
        assert recv_json(client) == {'rid': 7}


def test_a_vanished_worker_releases_its_subscriptions(brokers, make_server, raw):
    """B-014..B-016, : a worker that dies releases its subscriptions."""
    servers = brokers(1)
    w = worker(make_server, servers)
    subscribed_client(raw, w, 'foo')
    wait_until(lambda: servers[0].subscriptions and list(servers[0].subscriptions.values())[0])
    w.exchange.close()
    wait_until(lambda: not servers[0].connections)
    assert servers[0].subscriptions == {} and ('unsubscribe', 'foo') in servers[0].broker.events


def test_wrong_secret_is_refused(brokers, make_server, caplog):
    """a wrong key is refused with a warning naming the broker (the link
    may be refused before the test's listener exists: then the warning is logged)."""
    servers = brokers(1, secret='right')
    engine = BrokerEngine([servers[0].socket_path], 'wrong', ack_timeout=1000)
    warnings = []
    server = make_server({}, engine=engine)
    server.on('warning', warnings.append)
    refusal = 'Broker 0 refused this worker: Invalid password was supplied to the broker'
    wait_until(lambda: any(refusal in str(w) for w in warnings) or refusal in caplog.text)
    assert not server.is_ready


def test_key_value_store_through_the_exchange(brokers, make_server):
    """B-146..B-152, B-155..B-166, B-179..B-185 through worker -> broker links."""
    servers = brokers(2)
    ex = worker(make_server, servers).exchange
    assert ex.set(['d', 'e', 'f'], 'This is a value', get_value=True) == 'This is a value'
    assert ex.add(['d', 'e', 'f'], 'append this') == 1
    assert ex.get(['d', 'e', 'f']) == ['This is a value', 'append this']
    ex.set(['j', 'k', 'l'], 'v1')
    ex.concat(['j', 'k', 'l'], [1, 2, 3, 4])
    assert ex.get(['j', 'k', 'l']) == ['v1', 1, 2, 3, 4]
    ex.set(['m', 'n', 'o'], {'one': 1, 'two': 2, 'three': 3, 'four': 4, 'five': 5})
    ex.remove_range(['m', 'n', 'o'], 'two', 'three')
    assert json.dumps(ex.get(['m', 'n', 'o'])) == '{"one": 1, "three": 3, "four": 4, "five": 5}'
    ex.set(['this', 'is', 'an', 'array'], list(range(8)))
    assert ex.get_range(['this', 'is', 'an', 'array'], 2, 5) == [2, 3, 4]
    ex.set(['levelA1', 'levelA2'], ['a', 'b', 'c', 'd', 'e'])
    ex.splice(['levelA1', 'levelA2'], index=2, count=2, items=['c2', 'd2'])
    assert ex.get(['levelA1', 'levelA2']) == ['a', 'b', 'c2', 'd2', 'e']
    ex.set(['a', 'b', 'c'], [1, 2, 3])
    assert ex.pop(['a', 'b', 'c'], get_value=True) == [3] and ex.get(['a', 'b', 'c']) == [1, 2]
    assert ex.remove(['a', 'b', 'c'], get_value=True) == [1, 2] and ex.get(['a', 'b', 'c']) is None
    assert ex.has_key(['d', 'e', 'f']) and not ex.has_key('missing')
    assert set(ex.get_all()) >= {'d', 'j', 'm', 'this', 'levelA1', 'a'}
    ex.remove_all()
    assert ex.get_all() == {}


def test_expiry_removes_the_leaf(brokers, make_server):
    """B-177."""
    servers = brokers(2)
    ex = worker(make_server, servers).exchange
    ex.set(['check', 'expire', 'key'], 'some data')
    ex.expire([['check', 'expire', 'key']], 1)
    assert ex.get_expiry(['check', 'expire', 'key']) is not None
    gevent.sleep(2.3)
    assert ex.get(['check']) == {'expire': {}}


def test_bad_keys_get_a_clear_error_and_the_broker_keeps_serving(brokers, make_server):
    """a key that is not a string gives an error in the callback."""
    servers = brokers(1)
    ex = worker(make_server, servers).exchange
    with pytest.raises(Exception, match='a key must be a str or an int'):
        ex.set({'not': 'a key'}, 1)
    assert ex.set('fine', 1, get_value=True) == 1


def test_send_reaches_the_broker_message_handler(brokers, make_server):
    """X-39: exchange.send(data, 1) -> broker 1's message handler; the answers come as a list."""
    servers = brokers(2)
    for server in servers:
        server.broker.on('message', lambda data, respond, _id=server.broker.id: respond(None, {'from': _id, 'got': data}))
    ex = worker(make_server, servers).exchange
    assert ex.send({'q': 1}, 1) == [{'from': 1, 'got': {'q': 1}}]
    assert ex.send('all') == [{'from': 0, 'got': 'all'}, {'from': 1, 'got': 'all'}]


def test_a_restarted_broker_gets_the_subscriptions_back(brokers, make_server, raw, tmp_path):
    """B-187: after a broker restart the workers resubscribe; a warning reports the gap."""
    servers = brokers(1)
    w = worker(make_server, servers)
    warnings = []
    w.on('warning', warnings.append)
    client = subscribed_client(raw, w, 'foo')
    servers[0].stop()
    wait_until(lambda: any('Lost the connection to broker 0' in str(x) for x in warnings))
    restarted = BrokerServer(FakeBroker(0), servers[0].socket_path, 's3cret')
    restarted.start()
    servers[0] = restarted
    wait_until(lambda: restarted.subscriptions and 'foo' in list(restarted.subscriptions.values())[0])
    w.exchange.publish('foo', 'after restart')
    assert recv_json(client)['data']['data'] == 'after restart'


def test_a_custom_mapper_chooses_the_broker_of_each_key(brokers, make_server):
    """setMapper/getMapper/map: key/value keys follow the mapper."""
    servers = brokers(2)
    ex = worker(make_server, servers).exchange
    ex.set_mapper(lambda key, count: 1)
    assert ex.get_mapper() is not None
    ex.set('foo', 'on broker 1')             # the hash would put 'foo' on broker 0
    assert servers[1].data_map.get('foo') == 'on broker 1'
    assert ex.map('foo', 'get') == 'on broker 1'


def test_pub_sub_batch_duration_still_delivers_in_order(brokers, make_server, raw):
    """pubSubBatchDuration: pub/sub commands leave in batches, in order."""
    servers = brokers(1)
    engine = BrokerEngine([servers[0].socket_path], 's3cret', batch_duration=20)
    w = make_server({}, engine=engine)
    wait_until(lambda: w.is_ready)
    client = subscribed_client(raw, w, 'batched')
    for n in range(20):
        w.exchange.publish('batched', n)
    assert [recv_json(client)['data']['data'] for _ in range(20)] == list(range(20))
