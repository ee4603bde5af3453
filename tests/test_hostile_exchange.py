"""Hostile traffic toward the brokers: a publish larger than a broker link carries,
publishes while a broker is down or not reading, and the Redis engine's message limit.
Workers are in-process servers with the broker engine against real BrokerServers on unix
sockets; clients are raw WebSocket clients."""

import json
import os
import signal
import socket

import gevent
import pytest
from gevent import socket as gsocket

from conftest import handshake, recv_json, wait_until
from gsc.cluster.brokerserver import BrokerServer
from gsc.cluster.brokerclient import ENTRY_OVERHEAD, BrokerEngine
from gsc.engines.redis import RedisEngine
from gsc.cluster.ipc import Channel, authenticate_peer
from master_harness import MasterProcess, free_port
from test_broker_engine import FakeBroker
from test_cluster_pubsub import Client

pytestmark = pytest.mark.timeout(30)

LINK_LIMIT = 64 * 1024
SECRET = 's3cret'


@pytest.fixture
def small_links(monkeypatch):
    """Every IPC link made during the test carries at most LINK_LIMIT bytes per frame."""
    monkeypatch.setattr(Channel, 'max_frame', LINK_LIMIT)


@pytest.fixture
def brokers(tmp_path):
    """``start(count)`` -> started BrokerServers; ``start.restart(i)`` a new one on the same
    socket; every one stopped at teardown."""
    started = []

    def start(count=1):
        for i in range(count):
            started.append(_broker(str(tmp_path / ('b%d' % i)), i))
        return list(started)

    def restart(index):
        server = _broker(started[index].socket_path, index)
        started.append(server)
        return server
    start.restart = restart
    yield start
    for server in started:
        server.stop()


def _broker(path, index):
    server = BrokerServer(FakeBroker(index), path, SECRET, expiry_accuracy=200)
    server.start()
    return server


def worker(make_server, paths, **engine_options):
    engine = BrokerEngine(paths, SECRET, **dict({'ack_timeout': 5000}, **engine_options))
    server = make_server({}, engine=engine)
    server.warnings = []
    server.on('warning', server.warnings.append)
    wait_until(lambda: server.is_ready)
    return server


def client_of(raw, server):
    client = raw(server)
    handshake(client)
    return client


def subscribe(client, channel, cid=2):
    client.send(json.dumps({'event': '#subscribe', 'data': {'channel': channel}, 'cid': cid}))
    assert recv_json(client) == {'rid': cid}


def publish(client, channel, data, cid):
    client.send(json.dumps({'event': '#publish', 'data': {'channel': channel, 'data': data},
                            'cid': cid}))


def answers(client, cids):
    """The answers of ``cids`` (rid -> packet); other packets are returned in a list."""
    got, others = {}, []
    while len(got) < len(cids):
        packet = recv_json(client)
        if packet.get('rid') in cids:
            got[packet['rid']] = packet
        else:
            others.append(packet)
    return got, others


def lost_links(server):
    return [w for w in server.warnings if 'Lost the connection' in str(w)]


def test_a_publish_larger_than_the_link_is_refused_and_the_link_stays_up(
        small_links, brokers, make_server, raw):
    """A client publish over the link limit gets a BrokerError ack; a call in flight on the same
    link and the publishes around it are delivered; the link never drops."""
    servers = brokers(2)
    w = worker(make_server, [s.socket_path for s in servers])
    links = [link.channel for link in w.exchange.engine.links]
    subscriber = client_of(raw, w)
    subscribe(subscriber, 'room')
    publisher = client_of(raw, w)
    in_flight = gevent.spawn(w.exchange.send, 'ping', 'room')
    publish(publisher, 'room', 'before', 3)
    publish(publisher, 'room', 'x' * (LINK_LIMIT + 1000), 4)
    publish(publisher, 'room', 'after', 5)
    got, _ = answers(publisher, {3, 4, 5})
    assert got[3] == {'rid': 3} and got[5] == {'rid': 5}
    assert got[4]['error']['name'] == 'BrokerError'
    assert 'more than a broker link carries' in got[4]['error']['message']
    assert in_flight.get(timeout=5) == [None]
    assert [recv_json(subscriber)['data']['data'] for _ in range(2)] == ['before', 'after']
    publish(publisher, 'room', 'later', 6)
    assert recv_json(subscriber)['data'] == {'channel': 'room', 'data': 'later'}
    assert [link.channel for link in w.exchange.engine.links] == links
    assert not lost_links(w)


def test_server_code_gets_a_broker_error_for_a_value_larger_than_the_link(
        small_links, brokers, make_server):
    """exchange.set of a value over the limit fails with BrokerError; an answer over the limit
    (the broker's side) fails that call only; the store keeps working."""
    servers = brokers(1)
    ex = worker(make_server, [servers[0].socket_path]).exchange
    with pytest.raises(Exception) as refused:
        ex.set('big', 'x' * (LINK_LIMIT + 1))
    assert refused.value.name == 'BrokerError' and 'big' in refused.value.message
    for _ in range(3):
        ex.add('list', 'y' * (LINK_LIMIT // 2))
    with pytest.raises(Exception) as too_big_answer:
        ex.get('list')
    assert 'cannot carry a message' in too_big_answer.value.message
    assert ex.count('list') == 3 and ex.set('small', 1, get_value=True) == 1


def test_publishes_for_a_down_broker_are_bounded_in_bytes_then_delivered(
        brokers, make_server, raw):
    """While the broker is down, publishes are queued up to maxBrokerQueueBytes and the rest
    fail with BrokerError at once; when it is back the queued ones are delivered in order."""
    limit = 64 * 1024
    servers = brokers(1)
    w = worker(make_server, [servers[0].socket_path], max_queue_bytes=limit)
    engine = w.exchange.engine
    subscriber = client_of(raw, w)
    subscribe(subscriber, 'room')
    publisher = client_of(raw, w)
    servers[0].stop()
    wait_until(lambda: engine.links[0].state != 'connected')
    item = 10 * 1024
    fits = limit // (item + ENTRY_OVERHEAD + 40)
    cids = set(range(10, 30))
    for cid in sorted(cids):
        publish(publisher, 'room', '%d:%s' % (cid, 'x' * item), cid)
    refused = {}
    while len(refused) < len(cids) - fits:
        packet = recv_json(publisher)
        refused[packet['rid']] = packet['error']
    assert all(err['name'] == 'BrokerError' and 'maxBrokerQueueBytes' in err['message']
               for err in refused.values())
    assert 0 < engine.budget.used <= limit
    queued = sorted(cids - set(refused))
    assert len(queued) >= 4
    brokers.restart(0)
    got, _ = answers(publisher, set(queued))
    assert all(packet == {'rid': cid} for cid, packet in got.items())
    delivered = [recv_json(subscriber)['data']['data'] for _ in queued]
    assert [int(text.split(':')[0]) for text in delivered] == queued
    assert engine.budget.used == 0


def test_a_broker_that_stops_reading_bounds_the_unsent_bytes(tmp_path, make_server, raw):
    """A broker that authenticates the worker then reads nothing: once maxBrokerQueueBytes are unsent, the
    next publishes fail with BrokerError instead of growing the worker's buffer."""
    limit = 64 * 1024
    path = str(tmp_path / 'stuck')
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    accepted = []
    stuck = gevent.spawn(_authenticate_then_stop_reading, listener, accepted)
    try:
        w = worker(make_server, [path], max_queue_bytes=limit)
        publisher = client_of(raw, w)
        item = 'x' * (16 * 1024)
        refused = None
        for cid in range(10, 200):
            publish(publisher, 'room', item, cid)
            if cid % 10 == 0:
                gevent.sleep(0.05)
                refused = _first_error(publisher)
                if refused:
                    break
        assert refused and refused['name'] == 'BrokerError' and 'not keeping up' in refused['message']
        assert w.exchange.engine.links[0].channel.unsent <= limit + 16 * 1024 + 1024
    finally:
        stuck.kill()
        for sock in accepted + [listener]:
            sock.close()


def _authenticate_then_stop_reading(listener, accepted):
    server = gsocket.socket(fileno=listener.detach())
    conn, _ = server.accept()
    accepted.extend([conn, server])
    authenticate_peer(conn, SECRET)
    gevent.sleep(60)


def _first_error(client):
    """The first error answer already received by ``client``, or None."""
    while True:
        try:
            packet = recv_json(client, timeout=0.05)
        except Exception:
            return None
        if 'error' in packet:
            return packet['error']


def test_redis_refuses_a_publish_over_its_message_limit(monkeypatch, make_server, raw, redis_server):
    """Redis engine: a publish over max_message_bytes gets a BrokerError ack; the next one is
    delivered."""
    monkeypatch.setattr(RedisEngine, 'max_message_bytes', LINK_LIMIT)
    server = make_server({'brokerEngine': 'redis', 'brokerEngineOptions': {'url': redis_server.url}})
    wait_until(lambda: server.is_ready)
    subscriber = client_of(raw, server)
    subscribe(subscriber, 'room')
    gevent.sleep(0.1)
    publisher = client_of(raw, server)
    publish(publisher, 'room', 'x' * LINK_LIMIT, 3)
    publish(publisher, 'room', 'fits', 4)
    got, _ = answers(publisher, {3, 4})
    assert got[3]['error']['name'] == 'BrokerError' and 'sent to Redis' in got[3]['error']['message']
    assert got[4] == {'rid': 4}
    assert recv_json(subscriber)['data'] == {'channel': 'room', 'data': 'fits'}


def test_a_stopped_broker_of_a_real_cluster_bounds_what_its_worker_holds(request):
    """A cluster with maxBrokerQueueBytes 32 KiB: while its broker process is stopped (SIGSTOP)
    publishes fail with BrokerError once 32 KiB wait unsent; after SIGCONT the accepted ones
    are acknowledged and delivered in order."""
    port = free_port()
    master = MasterProcess({'workers': 1, 'brokers': 1, 'port': port,
                            'workerController': 'tests.controllers.pubsub_worker',
                            'brokerController': 'tests.controllers.pubsub_broker',
                            'maxBrokerQueueBytes': 32 * 1024})
    request.addfinalizer(master.cleanup)
    master.ready(timeout=30)
    broker_pid = master.expect('brokerStart', data={'id': 0})['data']['pid']
    subscriber, publisher = Client(port), Client(port)
    request.addfinalizer(lambda: (subscriber.close(), publisher.close()))
    assert 'error' not in subscriber.call('#subscribe', {'channel': 'room'})
    os.kill(broker_pid, signal.SIGSTOP)
    request.addfinalizer(lambda: _resume(broker_pid))
    accepted, refused = [], None
    for n in range(300):
        cid = 100 + n
        publisher.ws.send(json.dumps({'event': '#publish', 'cid': cid, 'data': {
            'channel': 'room', 'data': '%d:%s' % (cid, 'x' * 16 * 1024)}}))
        refused = _error_within(publisher, 0.02)
        if refused:
            break
        accepted.append(cid)
    _resume(broker_pid)
    assert refused and refused['error']['name'] == 'BrokerError'
    assert 'maxBrokerQueueBytes is 32768' in refused['error']['message']
    acks = [publisher.recv() for _ in accepted]
    assert sorted(ack['rid'] for ack in acks) == accepted and not any('error' in a for a in acks)
    delivered = [subscriber.recv(timeout=10)['data']['data'] for _ in accepted]
    assert [int(text.split(':')[0]) for text in delivered] == accepted


def _error_within(client, seconds):
    """An answer with an error received within ``seconds``, else None."""
    try:
        packet = client.recv(timeout=seconds)
    except TimeoutError:
        return None
    assert 'error' in packet, packet
    return packet


def _resume(pid):
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def test_a_queued_publish_that_times_out_gives_its_bytes_back(brokers, make_server, raw):
    """A publish queued for a down broker fails after the ack timeout and no longer counts
    against maxBrokerQueueBytes."""
    servers = brokers(1)
    w = worker(make_server, [servers[0].socket_path], ack_timeout=1000)
    engine = w.exchange.engine
    publisher = client_of(raw, w)
    servers[0].stop()
    wait_until(lambda: engine.links[0].state != 'connected')
    publish(publisher, 'room', 'x' * 1000, 3)
    wait_until(lambda: engine.budget.used > 0)
    answer = recv_json(publisher)
    assert answer['rid'] == 3 and 'The publish action timed out' in answer['error']['message']
    assert engine.budget.used == 0
