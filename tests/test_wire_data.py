"""Every packet that carries data leaves gsc exactly as it leaves SocketCluster 14.4.2.

The expected frames are written out as text (SocketCluster itself is not in the suite): a
``null`` stays ``null``, a left-out value (JavaScript's ``undefined``) stays left out, and
``false``, ``0``, ``""``, ``{}``, ``[]`` and nested values arrive as they were sent.
Publications are checked through the standalone engine, the broker processes and the Redis
engine, with and without publish middleware, live and replayed from history, from a raw
socket and from the official client.
"""

import json
import types

import pytest

from conftest import handshake, recv_json, wait_until
from controllers.wire_worker import install
from master_harness import start_cluster
from test_js_client import pytestmark as needs_the_official_client, run_scenario
from wsraw import RawClient

# (name, the value as JSON text; None: left out)
VALUES = [
    ('null', 'null'),
    ('missing', None),
    ('false', 'false'),
    ('zero', '0'),
    ('empty string', '""'),
    ('empty object', '{}'),
    ('empty array', '[]'),
    ('nested', '{"a":[1,{"b":null}],"c":"","d":false}'),
]
HISTORY = {'h/*': {'size': 100}, 'o/*': {'size': 100, 'publishOffsets': True}}


def data_field(text, key='data'):
    """``,"data":<text>``, or nothing for a left-out value."""
    return '' if text is None else ',"%s":%s' % (key, text)


def publish_frame(channel, text):
    """What SocketCluster writes to a subscriber for a publication of ``text``."""
    return '{"event":"#publish","data":{"channel":"%s"%s}}' % (channel, data_field(text))


def history_frame(channel, text, offset, epoch, wrapped=False):
    """gsc's ``#publish`` on a history channel (offset and epoch beside the data; with
    publishOffsets the data is wrapped as ``{data, offset, epoch}`` too)."""
    if wrapped:
        text = '{%s"offset":%d,"epoch":"%s"}' % (data_field(text)[1:] + ',' if text is not None else '',
                                                 offset, epoch)
    return '{"event":"#publish","data":{"channel":"%s"%s,"offset":%d,"epoch":"%s"}}' % (
        channel, data_field(text), offset, epoch)


def client_publish(channel, text, cid):
    return '{"event":"#publish","data":{"channel":"%s"%s},"cid":%d}' % (channel, data_field(text), cid)


def server_publish(channel, text, cid):
    return '{"event":"serverPublish","data":{"channel":"%s"%s},"cid":%d}' % (
        channel, data_field(text), cid)


@pytest.fixture(scope='module')
def clusters(request):
    """``clusters(middleware)`` -> a running 1-worker, 1-broker cluster (started once)."""
    started = {}

    def get(middleware):
        if middleware not in started:
            started[middleware] = start_cluster(request, {
                'workers': 1, 'brokers': 1, 'workerController': 'tests.controllers.wire_worker',
                'logLevel': 1, 'channelHistory': HISTORY, 'wireMiddleware': middleware})
        return types.SimpleNamespace(port=started[middleware].port, path='/socketcluster/')
    return get


@pytest.fixture(params=[('standalone', False), ('standalone', True), ('broker', False),
                        ('broker', True), ('redis', False), ('redis', True)],
                ids=lambda p: p[0] + ('-middleware' if p[1] else ''))
def target(request, make_server, clusters):
    """A server (``port``, ``path``) on one engine, with or without publish middleware."""
    engine, middleware = request.param
    if engine == 'broker':
        return clusters(middleware)
    options = {'channelHistory': HISTORY}
    if engine == 'redis':
        redis_server = request.getfixturevalue('redis_server')
        options.update(brokerEngine='redis', brokerEngineOptions={'url': redis_server.url})
    server = make_server(options)
    install(server, server.exchange, middleware)
    return server


@pytest.fixture
def connect():
    """``connect(target)`` -> a handshaken raw client; all closed at teardown."""
    made = []

    def make(target):
        client = RawClient('ws://127.0.0.1:%d%s' % (target.port, target.path))
        made.append(client)
        handshake(client)
        return client
    yield make
    for client in made:
        client.close()


def subscribe(client, channel, cid, data=None):
    """Subscribe ``client`` to ``channel``; the messages that came with the answer."""
    packet = {'event': '#subscribe', 'data': {'channel': channel}, 'cid': cid}
    if data is not None:
        packet['data']['data'] = data
    client.send(json.dumps(packet))
    before = []
    while True:
        message = client.recv(5)
        if json.loads(message) == {'rid': cid}:
            return before
        before.append(message)


def receive(client, count):
    return [client.recv(5) for _ in range(count)]


def test_a_publication_reaches_every_subscriber_whatever_its_data(target, connect):
    """Client #publish and server exchange.publish of each value: the subscriber and the
    (subscribed) publisher get SocketCluster's frame; the publisher's ack is {"rid"}."""
    subscriber, publisher = connect(target), connect(target)
    subscribe(subscriber, 't', 2)
    subscribe(publisher, 't', 2)
    cid = 10
    for name, text in VALUES:
        for make in (client_publish, server_publish):
            cid += 1
            publisher.send(make('t', text, cid))
            expected = publish_frame('t', text)
            assert subscriber.recv(5) == expected, (name, make.__name__)
            assert sorted(receive(publisher, 2)) == sorted([expected, '{"rid":%d}' % cid]), name


@pytest.mark.parametrize('channel,wrapped', [('h/t', False), ('o/t', True)])
def test_history_keeps_and_replays_each_publication_as_it_was(target, connect, channel, wrapped):
    """On history channels (also with publishOffsets) each value is delivered live and
    replayed to a newcomer ({history: N}) in the same frame, null and left-out kept apart."""
    subscriber, publisher = connect(target), connect(target)
    subscribe(subscriber, channel, 2)
    live = []
    cid = 10
    for name, text in VALUES:
        for make in (client_publish, server_publish):
            cid += 1
            publisher.send(make(channel, text, cid))
            assert recv_json(publisher) == {'rid': cid}
            frame = subscriber.recv(5)
            packet = json.loads(frame)['data']
            assert frame == history_frame(channel, text, packet['offset'], packet['epoch'], wrapped), name
            live.append(frame)
    assert [json.loads(f)['data']['offset'] for f in live] == list(range(1, len(live) + 1))
    newcomer = connect(target)
    before = subscribe(newcomer, channel, 2, data={'history': 100})
    replayed = before[:]
    while True:
        message = newcomer.recv(5)
        if json.loads(message).get('event') == '#recovery':
            break
        replayed.append(message)
    assert replayed == live


@needs_the_official_client
@pytest.mark.parametrize('engine', ['standalone', 'broker', 'redis'])
def test_the_official_client_publishes_and_receives_every_kind_of_data(engine, request, make_server,
                                                                      clusters):
    """socketcluster-client publishes null, undefined, false, 0, '', {}, [] and a nested
    value, then asks the server to publish each: its watcher gets each back (undefined as
    undefined, null as null) and the frames are SocketCluster's."""
    if engine == 'broker':
        target = clusters(False)
    else:
        options = {}
        if engine == 'redis':
            url = request.getfixturevalue('redis_server').url
            options = {'brokerEngine': 'redis', 'brokerEngineOptions': {'url': url}}
        target = make_server(options)
        install(target, target.exchange)
    observations = run_scenario(target, 'dataSweep')
    watched = [args[0] for event, args in observations if event == 'watch']
    expected = [{'undefined': True} if text is None else {'value': json.loads(text)}
                for _name, text in VALUES]
    assert watched == expected * 2
    frames = [args[0] for event, args in observations if event == 'frame']
    assert frames == [publish_frame('sweep', text) for _name, text in VALUES] * 2
    assert not [o for o in observations if o[0] in ('publishError', 'serverPublishError', 'error')]


def value_of(text):
    """The Python value of ``text`` (UNDEFINED for a left-out value)."""
    from gsc.core.protocol import UNDEFINED
    return UNDEFINED if text is None else json.loads(text)


@pytest.fixture
def frames_server(make_server):
    """A standalone server whose sockets do, on request, each data-carrying call of the
    server API with ``VALUES[index]``; what its handlers saw is in ``server.seen``."""
    server = make_server({'authKey': 'wire-test-key'})
    server.seen = []

    def on_connection(socket, _status):
        def echo(data, respond):
            server.seen.append(('echo', data))
            respond(None, data)
        socket.on('echo', echo)
        socket.on('respondWith', lambda index, respond: respond(None, value_of(VALUES[index][1])))
        socket.on('failWith', lambda index, respond: respond('failed', value_of(VALUES[index][1])))
        socket.on('emitMe', lambda index, respond: socket.emit('fromServer', value_of(VALUES[index][1])))
        socket.on('callMe', lambda index, respond: socket.emit(
            'fromServer', value_of(VALUES[index][1]),
            lambda err, data: server.seen.append(('answer', err, data))))
        socket.on('kickMe', lambda index, respond: socket.kick_out('k', value_of(VALUES[index][1])))
        socket.on('disconnectMe', lambda index, respond: socket.disconnect(4321, value_of(VALUES[index][1])))
    server.on('connection', on_connection)

    def subscribe_middleware(req, next_):
        server.seen.append(('subscribe', req.data))
        next_()
    server.add_middleware(server.MIDDLEWARE_SUBSCRIBE, subscribe_middleware)
    return server


@pytest.mark.parametrize('name,text', VALUES, ids=[name for name, _text in VALUES])
def test_emits_and_responses_carry_each_value_as_socketcluster_does(frames_server, raw, name, text):
    """Client emit -> handler -> respond(None, data) echo; respond(None, value); respond(err,
    value); server emit with and without a callback, and the client's answer to it."""
    client = raw(frames_server)
    handshake(client)
    client.send('{"event":"echo"%s,"cid":2}' % data_field(text))
    assert client.recv(5) == '{"rid":2%s}' % data_field(text)
    assert frames_server.seen.pop() == ('echo', None if text is None else json.loads(text))
    index = VALUES.index((name, text))
    client.send('{"event":"respondWith","data":%d,"cid":3}' % index)
    assert client.recv(5) == '{"rid":3%s}' % data_field(text)
    client.send('{"event":"failWith","data":%d,"cid":4}' % index)
    assert client.recv(5) == '{"rid":4,"error":"failed"%s}' % data_field(text)
    client.send('{"event":"emitMe","data":%d}' % index)
    assert client.recv(5) == '{"event":"fromServer"%s}' % data_field(text)
    client.send('{"event":"callMe","data":%d}' % index)
    assert client.recv(5) == '{"event":"fromServer"%s,"cid":1}' % data_field(text)
    client.send('{"rid":1%s}' % data_field(text))
    wait_until(lambda: frames_server.seen)
    assert frames_server.seen.pop() == ('answer', None, None if text is None else json.loads(text))


@pytest.mark.parametrize('name,text', VALUES, ids=[name for name, _text in VALUES])
def test_subscribe_data_kick_out_and_disconnect_carry_each_value(frames_server, raw, name, text):
    """#subscribe's data reaches the subscribe middleware; #kickOut's message and
    #disconnect's data are left out when undefined, kept otherwise."""
    index = VALUES.index((name, text))
    client = raw(frames_server)
    handshake(client)
    client.send('{"event":"#subscribe","data":{"channel":"k"%s},"cid":2}' % data_field(text))
    assert client.recv(5) == '{"rid":2}'
    assert frames_server.seen.pop() == ('subscribe', None if text is None else json.loads(text))
    client.send('{"event":"kickMe","data":%d}' % index)
    assert client.recv(5) == '{"event":"#kickOut","data":{%s"channel":"k"}}' % (
        '' if text is None else '"message":%s,' % text)
    client.send('{"event":"disconnectMe","data":%d}' % index)
    assert client.recv(5) == '{"event":"#disconnect","data":{"code":4321%s}}' % data_field(text)


def test_the_handshake_and_authenticate_answers_are_socketcluster_s_frames(frames_server, raw):
    """The handshake's answer without a token and with a malformed one, and #authenticate's
    answers to a valid and a malformed token: the same keys, order and values."""
    import jwt
    client = raw(frames_server)
    client.send('{"event":"#handshake","data":{},"cid":1}')
    answer = client.recv(5)
    socket_id = json.loads(answer)['data']['id']
    assert answer == '{"rid":1,"data":{"id":"%s","pingTimeout":20000,"isAuthenticated":false}}' % socket_id
    other = raw(frames_server)
    other.send('{"event":"#handshake","data":{"authToken":"garbage"},"cid":1}')
    assert other.recv(5) == '{"event":"#removeAuthToken","data":null}'
    answer = other.recv(5)
    socket_id = json.loads(answer)['data']['id']
    assert answer == ('{"rid":1,"data":{"id":"%s","pingTimeout":20000,"authError":{"message":'
                      '"jwt malformed","name":"AuthTokenInvalidError"},"isAuthenticated":false}}'
                      % socket_id)
    token = jwt.encode({'username': 'bob'}, 'wire-test-key', algorithm='HS256')
    client.send('{"event":"#authenticate","data":"%s","cid":2}' % token)
    assert client.recv(5) == '{"rid":2,"data":{"isAuthenticated":true,"authError":null}}'
    client.send('{"event":"#authenticate","data":"garbage","cid":3}')
    assert client.recv(5) == '{"event":"#removeAuthToken","data":null}'
    assert client.recv(5) == ('{"rid":3,"error":{"message":"jwt malformed","name":"AuthTokenInvalidError"},'
                              '"data":{"isAuthenticated":false,"authError":{"message":"jwt malformed",'
                              '"name":"AuthTokenInvalidError"}}}')
