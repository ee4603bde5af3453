"""Cluster behaviours of SocketCluster on real process trees:
a killed worker seen by a gsc client (B-006, B-007), 100 clients on 3 workers / 3 brokers and
the brokers' tables after they leave (B-013..B-016), IPC sends without callbacks (B-026,
B-039, B-143).  Every tree is killed by its process group id (tests/master_harness.py).
"""

import os
import signal
import time

import gevent
import pytest

from conftest import wait_until
from master_harness import MasterProcess, free_port

pytestmark = [pytest.mark.timeout(90), pytest.mark.filterwarnings('ignore::DeprecationWarning')]

IPC = {'ipcAckTimeout': 1000, 'workerController': 'tests.controllers.ipc_worker',
       'brokerController': 'tests.controllers.ipc_broker'}
CLUSTER_RECONNECT = {'initialDelay': 100, 'randomness': 0, 'multiplier': 1.5, 'maxDelay': 500}


@pytest.fixture
def start_master(request):
    """``start_master(options)`` -> a ready MasterProcess on a free port, killed at teardown."""
    started = []

    def start(options):
        port = free_port()
        master = MasterProcess(dict(options, port=port))
        started.append(master)
        master.port = port
        master.ready(timeout=30)
        return master
    request.addfinalizer(lambda: [master.cleanup() for master in started])
    return start


def ask(master, cmd, tag, **fields):
    master.send(cmd, tag=tag, **fields)
    return master.expect('callback', tag=tag)


def test_a_killed_worker_drops_the_client_which_resubscribes_on_the_respawn(start_master, clients):
    """B-006: the client subscribed to foo; its worker is killed -> client `error`
    SocketProtocolError 1006, channel `unsubscribe`, subscriptions() []; B-007: the worker is
    respawned and the client, reconnecting on its own, is subscribed to foo again without an
    explicit subscribe, and publishes reach it."""
    master = start_master(dict(IPC, workers=1, brokers=1))
    client = clients(master.port, auto_reconnect_options=CLUSTER_RECONNECT)
    errors, events = [], []
    client.on('error', errors.append)
    client.subscribe('foo')
    client.wait_for('subscribe', 10)
    for name in ('unsubscribe', 'subscribe', 'disconnect', 'connect'):
        client.on(name, lambda *args, _name=name: events.append(_name))
    at_unsubscribe = []
    client.on('unsubscribe', lambda name: at_unsubscribe.append(client.subscriptions()))
    pid = client.invoke('whoami')
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: at_unsubscribe, timeout=3)
    assert at_unsubscribe == [[]]
    wait_until(lambda: errors, timeout=3)
    assert errors[0].name == 'SocketProtocolError' and errors[0].code == 1006
    wait_until(lambda: 'subscribe' in events, timeout=20)
    assert client.subscriptions() == ['foo']
    assert events[:2] == ['unsubscribe', 'disconnect'] and events.index('connect') < events.index('subscribe')
    assert client.invoke('whoami') != pid
    received = []
    client.watch('foo', received.append)
    client.publish('foo', 'after respawn')
    wait_until(lambda: received == ['after respawn'], timeout=5)
    master.expect('workerExit', data={'id': 0, 'signal': 'SIGKILL'})
    master.expect('workerStart', data={'id': 0, 'respawn': True})


def broker_reports(master, brokers=3):
    return [ask(master, 'send_to_broker', 'report-%d-%f' % (i, time.monotonic()), id=i,
                data={'report': True})['data'] for i in range(brokers)]


def test_hundred_clients_and_clean_brokers(start_master, clients):
    """B-013: 3 workers / 3 brokers, 100 clients: each `connect` sees state open; B-014: 6 of
    them subscribe to foo (a broker holds it), then unsubscribe -> no broker's table holds foo;
    B-015, B-016: after all 100 disconnect, every broker's table is empty and its data map is
    {} (nothing per socket is left in brokers)."""
    master = start_master({'workers': 3, 'brokers': 3, 'ipcAckTimeout': 5000,
                           'workerController': 'tests.controllers.ipc_worker',
                           'brokerController': 'tests.controllers.behaviours_broker'})
    states = []
    made = []
    for _ in range(100):
        client = clients(master.port, auto_reconnect=False, auto_reconnect_options=CLUSTER_RECONNECT)
        client.once('connect', lambda status, c=client: states.append(c.state))
        made.append(client)
    wait_until(lambda: len(states) == 100, timeout=20)
    assert states == ['open'] * 100
    pids = {client.invoke('whoami') for client in made[:30]}
    assert len(pids) > 1  # the clients really are spread over workers
    subscribers = made[:6]
    for client in subscribers:
        client.subscribe('foo')
    wait_until(lambda: all(c.subscriptions() == ['foo'] for c in subscribers), timeout=10)
    reports = broker_reports(master)
    assert sum('foo' in r['channels'] for r in reports) == 1
    for client in subscribers:
        client.unsubscribe('foo')
    deadline = time.monotonic() + 5
    while any('foo' in r['channels'] for r in reports) and time.monotonic() < deadline:
        gevent.sleep(0.2)
        reports = broker_reports(master)
    assert not any('foo' in r['channels'] for r in reports)
    for client in made:
        client.subscribe('ch-%d' % (id(client) % 7))
    wait_until(lambda: all(c.subscriptions() for c in made), timeout=10)
    for client in made:
        client.disconnect()
    deadline = time.monotonic() + 5
    reports = broker_reports(master)
    while any(r['channels'] for r in reports) and time.monotonic() < deadline:
        gevent.sleep(0.2)
        reports = broker_reports(master)
    assert [r['channels'] for r in reports] == [[], [], []]
    assert [r['data'] for r in reports] == [{}, {}, {}]


def test_ipc_sends_without_callbacks_report_nothing(start_master):
    """B-026: a worker sends {doNothing} to the master without a callback -> no timeout, nothing
    reported; B-039: a broker sends {fail} without a callback -> the master's error goes nowhere;
    B-143: a broker sends {doNothing} without a callback -> no TimeoutError, and 1.5 s later
    the broker still answers."""
    master = start_master(dict(IPC, workers=1, brokers=1))
    for cmd, data, tag in (('send_to_worker', {'doNothing': True}, 'B-026'),
                           ('send_to_broker', {'fail': True}, 'B-039'),
                           ('send_to_broker', {'doNothing': True}, 'B-143')):
        answer = ask(master, cmd, 'ask-' + tag, id=0, data={'ask': data, 'callback': False, 'tag': tag})
        assert answer['err'] is None and answer['data'] == 'asked'
    master.expect('workerMessage', data={'doNothing': True})
    master.expect('brokerMessage', data={'fail': True})
    master.expect('brokerMessage', data={'doNothing': True})
    later = master.collect(1.6)
    assert not [e for e in later if e['event'] in ('fail', 'warning', 'workerExit', 'brokerExit')]
    assert not [e for e in master.events if isinstance(e.get('data'), dict)
                and e['data'].get('report') in ('B-026', 'B-039', 'B-143')]
    assert ask(master, 'send_to_broker', 'B-143-done', id=0, data={})['data'] == {'id': 1, 'name': 'TestName'}
    assert ask(master, 'send_to_worker', 'B-026-done', id=0, data={})['data'] == {'id': 1, 'name': 'TestName'}
