"""Channel presence across the workers of a real cluster (2 workers, 2 brokers): members and
#join/#leave seen from every worker, a closed socket's leave, a killed worker's (kill -9)
entries gone, a respawned broker filled again by the workers' joins."""

import os
import signal
import time

import pytest

from master_harness import start_cluster
from test_cluster_pubsub import clients_on_both_workers

OPTIONS = {'workers': 2, 'brokers': 2, 'workerController': 'tests.controllers.pubsub_worker',
           'logLevel': 1, 'channelPresence': {'room/*': {'maxMembers': 50}}}
CHANNEL = 'room/1'


@pytest.fixture
def cluster(request):
    return start_cluster(request, OPTIONS)


@pytest.fixture
def spread(cluster, request):
    made = clients_on_both_workers(cluster.port, 2)
    request.addfinalizer(lambda: [client.close() for client in made])
    return made  # two clients on worker 0, then two on worker 1


def next_event(client, name, timeout=5):
    """The next packet of event ``name`` (others read and dropped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        packet = client.recv(timeout=max(0.01, deadline - time.monotonic()))
        if packet.get('event') == name:
            return packet['data']
    raise AssertionError('no %s within %ss' % (name, timeout))


def members(client):
    """The socket ids of the ``#presence`` answer (None for an error answer)."""
    answer = client.call('#presence', {'channel': CHANNEL})
    if 'error' in answer:
        return None
    return sorted(member['socketId'] for member in answer['data']['members'])


def worker_view(client):
    """exchange.presence(CHANNEL) on the client's worker: {socket id: worker}."""
    answer = client.call('kv', {'method': 'presence', 'args': [CHANNEL]})
    return {sid: info['worker'] for sid, info in (answer.get('data') or {}).items()}


def eventually(fn, expected, timeout=8):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value == expected or time.monotonic() > deadline:
            assert value == expected
            return
        time.sleep(0.1)


def subscribe(client, data=None):
    request = {'channel': CHANNEL}
    if data is not None:
        request['data'] = data
    answer = client.call('#subscribe', request)
    assert answer == {'rid': client.cid}, answer


def test_members_and_join_leave_across_workers(spread):
    watcher, mate, far, far2 = spread
    subscribe(watcher, {'joinLeave': True})
    subscribe(mate)
    subscribe(far)
    # the watcher's own #join came before its #subscribe answer (call() skipped it)
    others = {next_event(watcher, '#join')['socketId'] for _ in range(2)}
    seen = worker_view(far2)
    assert sorted(seen.values()) == [0, 0, 1] and others < set(seen)
    joined = set(seen)
    assert members(far2) == sorted(joined) == members(watcher)
    far_id = [sid for sid, worker in seen.items() if worker == 1][0]
    far.close()
    leave = next_event(watcher, '#leave')
    assert leave == {'channel': CHANNEL, 'socketId': far_id, 'user': None}
    eventually(lambda: members(far2), sorted(joined - {far_id}))


def test_a_killed_workers_members_are_gone_within_seconds(cluster, spread):
    watcher, mate, far, far2 = spread
    subscribe(watcher, {'joinLeave': True})
    subscribe(far)
    subscribe(far2)
    assert sorted(worker_view(mate).values()) == [0, 1, 1]
    worker = cluster.expect('workerStart', data={'id': 1})
    os.kill(worker['data']['pid'], signal.SIGKILL)
    started = time.monotonic()
    eventually(lambda: sorted(worker_view(mate).values()), [0], timeout=5)
    assert time.monotonic() - started < 5
    leaves = [next_event(watcher, '#leave') for _ in range(2)]
    assert {leave['channel'] for leave in leaves} == {CHANNEL}


def test_a_respawned_broker_gets_the_members_again(cluster, spread):
    watcher, mate, far, far2 = spread
    for client in (watcher, far):
        subscribe(client)
    before = members(mate)
    assert len(before) == 2
    for broker_id in (0, 1):
        broker = cluster.expect('brokerStart', data={'id': broker_id})
        os.kill(broker['data']['pid'], signal.SIGKILL)
    for broker_id in (0, 1):
        cluster.expect('brokerStart', data={'id': broker_id, 'respawn': True})
    eventually(lambda: members(mate), before, timeout=8)
    eventually(lambda: members(far2), before, timeout=8)
