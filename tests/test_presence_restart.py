"""Presence across broker restarts on a real cluster (2 workers, 1 broker): after each kill -9
of the broker, a joinLeave subscriber on either worker gets a ``#join`` for every member again,
those of its own worker and those the other worker joined first; ``#presence`` without a
channel names the missing field."""

import json
import os
import signal
import time

import pytest

from master_harness import start_cluster
from test_presence_cluster import CHANNEL, members, spread, subscribe  # noqa: F401 (spread: a fixture)

OPTIONS = {'workers': 2, 'brokers': 1, 'workerController': 'tests.controllers.pubsub_worker',
           'logLevel': 1, 'channelPresence': {'room/*': {'maxMembers': 50}}}
KILLS = 3


@pytest.fixture
def cluster(request):
    return start_cluster(request, OPTIONS)


def joins_until(client, expected, timeout=8):
    """The socket ids of the ``#join`` events ``client`` receives until it has seen
    ``expected`` (or the timeout)."""
    seen = set()
    deadline = time.monotonic() + timeout
    while not expected <= seen and time.monotonic() < deadline:
        try:
            raw = client.ws.recv(max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
        if raw in ('', '#1'):  # the server's ping
            client.ws.send('' if raw == '' else '#2')
            continue
        packet = json.loads(raw)
        if packet.get('event') == '#join':
            assert packet['data']['channel'] == CHANNEL
            seen.add(packet['data']['socketId'])
    return seen


@pytest.mark.timeout(90)
def test_joinleave_subscribers_on_both_workers_get_every_join_after_broker_kills(cluster, spread):
    watcher, mate, far_watcher, far = spread
    subscribe(watcher, {'joinLeave': True})
    subscribe(far_watcher, {'joinLeave': True})
    subscribe(mate)
    subscribe(far)
    everyone = set(members(mate))
    assert len(everyone) == 4
    for client in (watcher, far_watcher):
        joins_until(client, everyone, timeout=1)  # the joins of the start, if not read yet
    broker = cluster.expect('brokerStart', data={'id': 0})['data']
    for _ in range(KILLS):
        os.kill(broker['pid'], signal.SIGKILL)
        broker = cluster.expect('brokerStart', data={'id': 0, 'respawn': True}, timeout=20)['data']
        for client in (watcher, far_watcher):
            assert joins_until(client, everyone) == everyone, client.worker
        assert set(members(mate)) == everyone == set(members(far))


def test_presence_without_a_channel_names_the_field(spread):
    answer = spread[0].call('#presence', {})
    assert answer['error']['name'] == 'InvalidArgumentsError'
    assert 'channel field' in answer['error']['message'] and 'None' not in answer['error']['message']
