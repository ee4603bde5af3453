"""Channel history on a standalone server: #publish positions, exchange.history, recovery on
subscribe (raw WebSocket clients and the Python client)."""

import json

import gevent
import pytest

from conftest import handshake, recv_json, wait_until
from gsc.engines.simple import SimpleEngine
from gsc.errors import BrokerError, InvalidOptionsError
from gsc.core.history import HistoryRules
from gsc.server import listen
from gsc.server.socket_pubsub import MAX_RECOVERIES_IN_FLIGHT

HISTORY = {'room/*': {'size': 5, 'ttl': 60}, 'wrapped/*': {'publishOffsets': True}}


def history_server(make_server, **options):
    return make_server(dict({'channelHistory': HISTORY}, **options))


def subscribe(client, channel, data=None, cid=2):
    request = {'channel': channel}
    if data is not None:
        request['data'] = data
    client.send(json.dumps({'event': '#subscribe', 'data': request, 'cid': cid}))


def receive(client, count, timeout=5):
    return [recv_json(client, timeout) for _ in range(count)]


def publish_all(server, channel, values):
    for value in values:
        server.exchange.publish(channel, value)


def test_publish_frames_carry_offset_and_epoch(make_server, raw):
    server = history_server(make_server)
    client = raw(server)
    handshake(client)
    subscribe(client, 'room/a')
    subscribe(client, 'lobby', cid=3)
    subscribe(client, 'wrapped/a', cid=4)
    assert receive(client, 3) == [{'rid': 2}, {'rid': 3}, {'rid': 4}]
    publish_all(server, 'room/a', ['x', 'y'])
    server.exchange.publish('lobby', 'z')
    server.exchange.publish('wrapped/a', {'n': 1})
    first, second, plain, wrapped = receive(client, 4)
    epoch = first['data']['epoch']
    assert first == {'event': '#publish', 'data': {'channel': 'room/a', 'data': 'x', 'offset': 1,
                                                   'epoch': epoch}}
    assert second['data']['offset'] == 2 and second['data']['epoch'] == epoch
    assert plain == {'event': '#publish', 'data': {'channel': 'lobby', 'data': 'z'}}
    position = {'offset': 1, 'epoch': wrapped['data']['epoch']}
    assert wrapped['data'] == dict(position, channel='wrapped/a',
                                   data=dict(position, data={'n': 1}))


def test_exchange_history_blocking_and_with_a_callback(make_server):
    server = history_server(make_server)
    publish_all(server, 'room/a', range(1, 8))
    result = server.exchange.history('room/a')
    assert [p['offset'] for p in result['publications']] == [3, 4, 5, 6, 7]
    assert result['publications'][0] == {'offset': 3, 'data': 3}
    assert result['offset'] == 7 and result['recovered']
    answers = []
    server.exchange.history('room/a', since=5, epoch=result['epoch'], limit=1,
                            callback=lambda err, value: answers.append((err, value)))
    wait_until(lambda: answers)
    assert answers[0][0] is None and answers[0][1]['publications'] == [{'offset': 6, 'data': 6}]
    gone = server.exchange.history('room/a', since=1, epoch=result['epoch'])
    assert not gone['recovered'] and gone['publications'] == []
    with pytest.raises(BrokerError, match='lobby has no history'):
        server.exchange.history('lobby')


def test_bad_channel_history_option_fails_the_server():
    with pytest.raises(InvalidOptionsError, match='channelHistory'):
        listen(0, {'channelHistory': {'room/*': {'size': 0}}})


def test_recover_writes_the_missed_then_live_then_recovery(make_server, raw):
    server = history_server(make_server)
    publish_all(server, 'room/a', ['a', 'b', 'c'])
    epoch = server.exchange.history('room/a')['epoch']
    client = raw(server)
    handshake(client)
    subscribe(client, 'room/a', {'recover': {'offset': 1, 'epoch': epoch}})
    ack, missed_b, missed_c, recovery = receive(client, 4)
    assert ack == {'rid': 2}
    assert [missed_b['data']['data'], missed_c['data']['data']] == ['b', 'c']
    assert recovery == {'event': '#recovery', 'data': {'channel': 'room/a', 'recovered': True,
                                                       'epoch': epoch, 'offset': 3, 'missed': 2}}
    server.exchange.publish('room/a', 'd')
    assert recv_json(client)['data']['offset'] == 4


def test_recover_from_a_lost_position_is_told(make_server, raw):
    server = history_server(make_server)
    publish_all(server, 'room/a', range(10))
    client = raw(server)
    handshake(client)
    subscribe(client, 'room/a', {'recover': {'offset': 2, 'epoch': 'gone'}})
    ack, recovery = receive(client, 2)
    assert ack == {'rid': 2}
    assert recovery['event'] == '#recovery' and recovery['data']['recovered'] is False
    assert recovery['data']['missed'] == 0 and recovery['data']['offset'] == 10


def test_history_n_on_joining(make_server, raw):
    server = history_server(make_server)
    publish_all(server, 'wrapped/a', ['a', 'b', 'c'])
    client = raw(server)
    handshake(client)
    subscribe(client, 'wrapped/a', {'history': 2})
    ack, b, c, recovery = receive(client, 4)
    assert [b['data']['data']['data'], c['data']['data']['offset']] == ['b', 3]
    assert recovery['data']['recovered'] is True and recovery['data']['missed'] == 2


@pytest.mark.parametrize('data, words', [
    ({'recover': {'offset': -1, 'epoch': 'e'}}, 'recover must be'),
    ({'recover': {'offset': 1, 'epoch': 'e' * 65}}, 'recover must be'),
    ({'recover': 'yesterday'}, 'recover must be'),
    ({'history': 6}, 'history must be a whole number from 0 to 5'),
    ({'history': True}, 'history must be'),
])
def test_bad_recovery_requests_are_refused(make_server, raw, data, words):
    server = history_server(make_server)
    client = raw(server)
    handshake(client)
    subscribe(client, 'room/a', data)
    answer = recv_json(client)
    assert answer['rid'] == 2 and words in answer['error']['message']
    assert answer['error']['name'] == 'BrokerError'
    subscribe(client, 'room/a', cid=3)  # the socket still serves
    assert recv_json(client) == {'rid': 3}


def test_recovery_data_on_a_channel_without_history_is_ignored(make_server, raw):
    server = history_server(make_server)
    client = raw(server)
    handshake(client)
    subscribe(client, 'lobby', {'recover': {'offset': 1, 'epoch': 'e'}})
    assert recv_json(client) == {'rid': 2}
    server.exchange.publish('lobby', 'x')
    assert recv_json(client)['data'] == {'channel': 'lobby', 'data': 'x'}


class SlowHistoryEngine(SimpleEngine):
    """Answers history reads 30 ms late, as a broker does after a round trip: read when asked
    (``early``: live publications meanwhile come after the answer) or when answering (``late``:
    the ones held meanwhile are in the answer too)."""

    def __init__(self, read_when, **kwargs):
        SimpleEngine.__init__(self, **kwargs)
        self.read_when = read_when

    def history(self, channel, since, epoch, limit, callback):
        if self.read_when == 'early':
            answers = []
            SimpleEngine.history(self, channel, since, epoch, limit, lambda *a: answers.append(a))
            gevent.spawn_later(0.03, callback, *answers[0])
        else:
            gevent.spawn_later(0.03, SimpleEngine.history, self, channel, since, epoch, limit, callback)


@pytest.mark.parametrize('read_when', ['early', 'late'])
def test_publications_racing_the_recovery_arrive_once_in_order(make_server, raw, read_when):
    """A publisher greenlet publishes without pause while clients resubscribe with recover:
    every client sees every offset after its position exactly once, in order."""
    options = {'channelHistory': {'race': {'size': 10000}}}
    engine = SlowHistoryEngine(read_when, history_rules=HistoryRules.from_options(options))
    server = make_server(options, engine=engine)
    total = 400

    def publish():
        for i in range(total):
            server.exchange.publish('race', i)
            gevent.sleep(0.001 if i % 2 else 0)
    publisher = gevent.spawn(publish)
    try:
        seen = []
        for _ in range(4):
            gevent.sleep(0.02)
            result = server.exchange.history('race', limit=0)
            since = max(0, result['offset'] - 3)
            client = raw(server)
            handshake(client)
            subscribe(client, 'race', {'recover': {'offset': since, 'epoch': result['epoch']}})
            seen.append((client, since))
        publisher.join(10)
        assert publisher.successful()
        for client, since in seen:
            offsets, recoveries = [], []
            with gevent.Timeout(10):
                while not recoveries or not offsets or offsets[-1] < total:
                    message = recv_json(client)
                    if message.get('event') == '#publish':
                        offsets.append(message['data']['offset'])
                    elif message.get('event') == '#recovery':
                        recoveries.append(message['data'])
            assert offsets == list(range(since + 1, total + 1))
            assert len(recoveries) == 1 and recoveries[0]['recovered'] is True
    finally:
        publisher.kill()


def test_python_client_recovers_by_itself_after_a_reconnect(make_server, clients):
    server = history_server(make_server)
    sockets = []
    server.on('connection', lambda socket, status: sockets.append(socket))
    client = clients(server.port)
    received, recoveries = [], []
    channel = client.subscribe('room/a')
    channel.watch(received.append)
    channel.on('recovery', recoveries.append)
    wait_until(lambda: channel.state == 'subscribed')
    publish_all(server, 'room/a', ['a', 'b'])
    wait_until(lambda: received == ['a', 'b'])
    epoch = channel.position[1]
    assert channel.position == (2, epoch)
    sockets[-1].terminate()
    publish_all(server, 'room/a', ['c', 'd'])  # no yield: the client is away
    wait_until(lambda: recoveries)
    assert received == ['a', 'b', 'c', 'd']
    assert recoveries == [{'channel': 'room/a', 'recovered': True, 'epoch': epoch, 'offset': 4,
                           'missed': 2}]
    assert channel.position == (4, epoch)
    server.exchange.publish('room/a', 'e')
    wait_until(lambda: received[-1] == 'e')
    assert len(received) == 5


def test_python_client_is_told_when_the_gap_is_lost(make_server, clients):
    server = history_server(make_server)
    sockets = []
    server.on('connection', lambda socket, status: sockets.append(socket))
    client = clients(server.port)
    received, recoveries = [], []
    channel = client.subscribe('room/a')
    channel.watch(received.append)
    client.on('recovery', lambda name, result: recoveries.append((name, result)))
    wait_until(lambda: channel.state == 'subscribed')
    server.exchange.publish('room/a', 0)
    wait_until(lambda: received == [0])
    sockets[-1].terminate()
    publish_all(server, 'room/a', range(1, 10))  # more than size 5 while away
    wait_until(lambda: recoveries)
    name, result = recoveries[0]
    assert name == 'room/a' and result['recovered'] is False and result['offset'] == 10
    assert received == [0] and channel.position == (10, result['epoch'])


def test_publish_out_middleware_sees_replayed_and_live_publications(make_server, raw):
    server = history_server(make_server)

    def publish_out(req, next_):
        if req.data == 'secret':
            next_(True)  # blocked for everyone
        else:
            req.data = str(req.data).upper()
            next_()
    server.add_middleware(server.MIDDLEWARE_PUBLISH_OUT, publish_out)
    publish_all(server, 'room/a', ['a', 'secret', 'b'])
    epoch = server.exchange.history('room/a')['epoch']
    client = raw(server)
    handshake(client)
    subscribe(client, 'room/a', {'recover': {'offset': 0, 'epoch': epoch}})
    ack, a, b, recovery = receive(client, 4)
    assert [(m['data']['data'], m['data']['offset']) for m in (a, b)] == [('A', 1), ('B', 3)]
    assert recovery['data']['missed'] == 3 and recovery['data']['recovered']
    server.exchange.publish('room/a', 'c')
    live = recv_json(client)['data']
    assert (live['data'], live['offset'], live['epoch']) == ('C', 4, epoch)


def test_history_reads_in_flight_are_bounded_per_socket(make_server, raw):
    """A client subscribing and unsubscribing in a loop with `history` cannot keep more than
    MAX_RECOVERIES_IN_FLIGHT history reads waiting: the next subscribe is refused, and it may
    recover again once the reads are answered."""
    options = {'channelHistory': HISTORY}
    engine = SlowHistoryEngine('late', history_rules=HistoryRules.from_options(options))
    server = make_server(options, engine=engine)
    client = raw(server)
    handshake(client)
    rounds = MAX_RECOVERIES_IN_FLIGHT + 2
    for i in range(rounds):
        subscribe(client, 'room/a', {'history': 5}, cid=10 + 2 * i)
        client.send(json.dumps({'event': '#unsubscribe', 'data': 'room/a', 'cid': 11 + 2 * i}))
    answers = {}
    with gevent.Timeout(5):
        while len(answers) < 2 * rounds:
            message = recv_json(client)
            if 'rid' in message:
                answers[message['rid']] = message
    refused = [cid for cid in range(10, 10 + 2 * rounds, 2) if 'error' in answers[cid]]
    assert refused == [10 + 2 * i for i in range(MAX_RECOVERIES_IN_FLIGHT, rounds)]
    assert 'history reads' in answers[refused[0]]['error']['message']
    gevent.sleep(0.1)  # the slow reads are answered (to nobody)
    subscribe(client, 'room/a', {'history': 5}, cid=99)
    with gevent.Timeout(5):
        while True:
            message = recv_json(client)
            if message.get('rid') == 99:
                break
    assert 'error' not in message
