"""Strings survive JSON as in JavaScript: a lone surrogate a client sends (the
escape ``\\ud800`` in its JSON) comes back escaped in every frame gsc writes, and a token
crafted to make an error quote one costs the client an answer, never the worker."""

import base64
import json

import pytest

from conftest import handshake, recv_json, wait_until
from master_harness import start_cluster
from test_cluster_pubsub import clients_on_both_workers

LONE = '\ud800 x \udfff'
LONE_JSON = json.dumps(LONE)  # ASCII: "\ud800 x \udfff"


def b64url(text):
    return base64.urlsafe_b64encode(text.encode('ascii')).rstrip(b'=').decode('ascii')


# PyJWT refuses an unknown "crit" header and its message quotes the header's value
CRAFTED_TOKEN = '%s.%s.sig' % (b64url('{"alg":"HS256","crit":["\\ud800"]}'), b64url('{"a":1}'))


def echo_server(make_server, **options):
    server = make_server(options)
    server.on('connection', lambda socket, status: socket.on(
        'echo', lambda data, respond: respond(None, data)))
    return server


def test_an_echo_of_lone_surrogates_is_answered_with_the_same_string(make_server, raw):
    client = raw(echo_server(make_server))
    handshake(client)
    client.send('{"event":"echo","data":{"text":%s,%s:[%s]},"cid":2}' % (LONE_JSON, LONE_JSON, LONE_JSON))
    frame = client.recv(5)
    assert '\\ud800' in frame and '\\udfff' in frame
    assert json.loads(frame) == {'rid': 2, 'data': {'text': LONE, LONE: [LONE]}}


def test_a_crafted_token_header_is_refused_and_the_socket_serves_on(make_server, raw):
    client = raw(echo_server(make_server))
    client.send(json.dumps({'event': '#handshake', 'data': {'authToken': CRAFTED_TOKEN}, 'cid': 1}))
    answers = [recv_json(client) for _ in range(2)]  # #removeAuthToken and the answer
    assert {'event': '#removeAuthToken', 'data': None} in answers
    answer = [a for a in answers if a.get('rid') == 1][0]
    assert answer['data']['authError'] == {'name': 'AuthTokenInvalidError', 'message': 'invalid token'}
    assert answer['data']['isAuthenticated'] is False
    client.send('{"event":"echo","data":%s,"cid":3}' % LONE_JSON)
    assert recv_json(client) == {'rid': 3, 'data': LONE}


CLUSTER = {'workers': 2, 'brokers': 1, 'workerController': 'tests.controllers.pubsub_worker',
           'logLevel': 1, 'propagateErrors': False}


@pytest.fixture
def cluster(request):
    return start_cluster(request, CLUSTER)


@pytest.fixture
def two_workers(cluster, request):
    """A client on each worker, closed at teardown."""
    made = clients_on_both_workers(cluster.port, 1)
    request.addfinalizer(lambda: [client.close() for client in made])
    return made


def test_a_publish_of_lone_surrogates_is_acked_and_delivered_on_another_worker(cluster, two_workers):
    publisher, subscriber = two_workers
    channel = 'room' + LONE
    assert subscriber.call('#subscribe', {'channel': channel}) == {'rid': subscriber.cid}
    publisher.cid += 1
    publisher.ws.send('{"event":"#publish","data":{"channel":%s,"data":{"text":%s}},"cid":%d}'
                      % (json.dumps(channel), LONE_JSON, publisher.cid))
    assert json.loads(publisher.ws.recv(5)) == {'rid': publisher.cid}
    frame = subscriber.ws.recv(5)
    assert json.loads(frame) == {'event': '#publish', 'data': {'channel': channel, 'data': {'text': LONE}}}


def test_a_crafted_token_does_not_end_a_worker_without_propagated_errors(cluster, two_workers):
    for client in two_workers:
        client.cid += 1
        client.ws.send(json.dumps({'event': '#authenticate', 'data': CRAFTED_TOKEN, 'cid': client.cid}))
        answers = [json.loads(client.ws.recv(5)) for _ in range(2)]  # #removeAuthToken, the answer
        answer = [a for a in answers if a.get('rid') == client.cid][0]
        assert answer['error'] == {'name': 'AuthTokenInvalidError', 'message': 'invalid token'}
    for client in two_workers:
        reply = client.call('kv', {'method': 'get', 'args': [LONE]})
        assert reply == {'rid': client.cid, 'data': None}
    assert not [e for e in cluster.collect(1) + cluster.events if e.get('event') == 'workerExit']


def test_a_redis_channel_of_lone_surrogates_carries_them_between_instances(make_server, raw, redis_server):
    servers = []
    for _ in range(2):
        server = make_server({'brokerEngine': 'redis', 'brokerEngineOptions': {'url': redis_server.url}})
        wait_until(lambda: server.is_ready)
        servers.append(server)
    subscriber, publisher = raw(servers[0]), raw(servers[1])
    for client in (subscriber, publisher):
        handshake(client)
    channel = json.dumps('room' + LONE)
    subscriber.send('{"event":"#subscribe","data":{"channel":%s},"cid":2}' % channel)
    assert recv_json(subscriber) == {'rid': 2}
    publisher.send('{"event":"#publish","data":{"channel":%s,"data":%s},"cid":3}' % (channel, LONE_JSON))
    assert recv_json(publisher) == {'rid': 3}
    assert recv_json(subscriber) == {'event': '#publish', 'data': {'channel': 'room' + LONE, 'data': LONE}}
