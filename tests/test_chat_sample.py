"""The sample chat's rooms (``python run.py``): history with offsets and presence on
``room/*``, seen by gsc's Python client (tests/test_browser.py drives the page itself)."""

import json
import urllib.request

import pytest

from conftest import wait_until
from master_harness import free_port
from test_run import run_py, wait_for_line  # noqa: F401 (run_py is a fixture)

pytestmark = pytest.mark.timeout(60)


def post_message(port, room, text):
    """``POST /rooms/<room>/messages`` to the sample's WSGI app; its JSON answer."""
    request = urllib.request.Request(
        'http://127.0.0.1:%d/rooms/%s/messages' % (port, room), method='POST',
        data=json.dumps({'text': text}).encode(), headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def logged_in(clients, port, name):
    client = clients(port)
    wait_until(lambda: client.state == 'open', timeout=10)
    assert client.invoke('login', name) == {'username': name}
    return client


def test_a_late_joiner_gets_the_history_and_who_is_online(run_py, clients):  # noqa: F811
    port = free_port()
    proc = run_py('-w', '1', '-p', str(port))
    wait_for_line(proc, 'Broker count')
    assert post_message(port, 'lobby', 'first')['published'] is True
    post_message(port, 'lobby', 'second')

    ann = logged_in(clients, port, 'ann')
    joins = []
    ann.on('#join', lambda data, respond=None: joins.append(data))
    seen = []
    room = ann.subscribe('room/lobby', data={'history': 50, 'joinLeave': True})
    room.watch(seen.append)
    wait_until(lambda: len(seen) == 2)
    epoch = seen[0]['epoch']
    assert seen == [{'data': {'from': 'http', 'text': 'first'}, 'offset': 1, 'epoch': epoch},
                    {'data': {'from': 'http', 'text': 'second'}, 'offset': 2, 'epoch': epoch}]

    bob = logged_in(clients, port, 'bob')
    bob.subscribe('room/lobby', data={'joinLeave': True})
    wait_until(lambda: [j['user'] for j in joins] == ['ann', 'bob'])
    members = ann.invoke('#presence', {'channel': 'room/lobby'})['members']
    assert sorted(m['user'] for m in members) == ['ann', 'bob']

    room.publish({'text': 'hi bob'})
    wait_until(lambda: len(seen) == 3)
    assert seen[2] == {'data': {'from': 'ann', 'text': 'hi bob'}, 'offset': 3, 'epoch': epoch}


def test_named_options_win_over_the_sample_ones(run_py, clients):  # noqa: F811
    port = free_port()
    proc = run_py('-w', '1', '-p', str(port),
                  env={'SOCKETCLUSTER_OPTIONS': json.dumps({'channelHistory': {}})})
    wait_for_line(proc, 'Broker count')
    post_message(port, 'lobby', 'gone')
    ann = logged_in(clients, port, 'ann')
    seen = []
    room = ann.subscribe('room/lobby', data={'history': 50})
    room.watch(seen.append)
    wait_until(lambda: room.state == 'subscribed')
    room.publish({'text': 'live'})
    wait_until(lambda: seen)
    assert seen == [{'from': 'ann', 'text': 'live'}]
