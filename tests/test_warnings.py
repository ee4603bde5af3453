"""Warnings a client causes at will cost little: the worker's own listeners get
every one at once, while the master gets the first of a kind at once and then one summary
per kind per interval; a standalone server nobody listens to logs the same digest."""

import json
import logging

import pytest

from conftest import handshake, recv_json, wait_until
from master_harness import start_cluster
from wsraw import RawClient

BAD_PUBLISHES = 200


def bad_publish(cid):
    """A publish to a channel that is not a string: a BrokerError warning and an error answer."""
    return json.dumps({'event': '#publish', 'data': {'channel': 5, 'data': 1}, 'cid': cid})


def send_bad_publishes(client, count, first_cid=2):
    """Send ``count`` bad publishes and read every answer (each must be the BrokerError)."""
    for cid in range(first_cid, first_cid + count):
        client.send(bad_publish(cid))
    for cid in range(first_cid, first_cid + count):
        answer = recv_json(client)
        assert answer['rid'] == cid and answer['error']['name'] == 'BrokerError'


def digest_records(caplog):
    """The log lines of the server's BrokerError warnings: originals and summaries."""
    lines = [r.getMessage() for r in caplog.records if r.name == 'gsc.server.scserver']
    return [line for line in lines if 'invalid 5 channel' in line or 'BrokerError warnings' in line]


def test_unheard_warnings_are_logged_first_at_once_then_as_one_summary(make_server, raw, caplog):
    caplog.set_level(logging.WARNING, logger='gsc.server.scserver')
    server = make_server({'allowClientPublish': True})
    server.unheard_warnings.interval = 0.5
    client = raw(server)
    handshake(client)
    send_bad_publishes(client, 50)
    first = digest_records(caplog)
    assert len(first) == 1 and 'tried to publish to an invalid 5 channel' in first[0]
    wait_until(lambda: len(digest_records(caplog)) == 2)
    assert digest_records(caplog)[1] == '49 more BrokerError warnings in the last 0.5 s'
    send_bad_publishes(client, 1, first_cid=100)
    assert len(digest_records(caplog)) == 2, 'a kind is quiet only after an interval without any'


def test_a_listener_of_the_server_gets_every_warning(make_server, raw, caplog):
    server = make_server({'allowClientPublish': True})
    heard = []
    server.on('warning', heard.append)
    client = raw(server)
    handshake(client)
    send_bad_publishes(client, 20)
    assert len(heard) == 20 and all(w.name == 'BrokerError' for w in heard)
    assert not digest_records(caplog)


@pytest.fixture
def cluster(request):
    return start_cluster(request, {'workers': 1, 'brokers': 1, 'logLevel': 1,
                                   'workerController': 'tests.controllers.warning_worker'})


def test_the_worker_hears_every_client_warning_and_the_master_a_digest(cluster):
    client = RawClient('ws://127.0.0.1:%d/socketcluster/' % cluster.port)
    try:
        handshake(client)
        send_bad_publishes(client, BAD_PUBLISHES)
        client.send('{"event":"warnings","cid":1000}')
        assert recv_json(client) == {'rid': 1000, 'data': {'BrokerError': BAD_PUBLISHES}}
    finally:
        client.close()
    cluster.collect(2)
    warnings = [e for e in cluster.events if e.get('event') == 'warning' and e.get('name') == 'BrokerError']
    assert warnings, 'the first warning of a kind reaches the master at once'
    assert 'tried to publish to an invalid 5 channel' in warnings[0]['message']
    assert warnings[0]['origin']['type'] == 'Worker'
    assert 'reporting' not in warnings[0]['stack'] and 'socket.py' not in warnings[0]['stack']
    # a slow run may pass the 10 s interval: then one summary counts the rest
    summaries = warnings[1:]
    assert len(summaries) <= 1
    for summary in summaries:
        assert summary['message'] == '%d more BrokerError warnings in the last 10 s' % summary['count']
        assert summary['count'] <= BAD_PUBLISHES - 1
