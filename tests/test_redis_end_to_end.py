"""History and presence across two gsc instances (two process trees, one worker each, no
broker processes) sharing one redis-server, with gsc's Python client on each (history, presence and
their recovery on brokerEngine 'redis'), and a killed worker's members leaving within the presence ttl."""

import os
import signal

import jwt
import pytest

from conftest import wait_until
from gsc.engines.redis import PRESENCE_REFRESH, PRESENCE_TTL
from master_harness import start_cluster

KEY = 'redis-end-to-end-key'
CHANNEL = 'room/1'


@pytest.fixture
def instances(request, redis_server):
    started = [start_cluster(request, {
        'workers': 1, 'brokers': 0, 'workerController': 'tests.controllers.history_worker',
        'authKey': KEY, 'brokerEngine': 'redis', 'brokerEngineOptions': {'url': redis_server.url},
        'channelHistory': {'room/*': {'size': 100}}, 'channelPresence': {'room/*': {}}},
        ready=False) for _ in range(2)]
    for master in started:
        master.ready(timeout=30)
    return started


def connect(clients, port, username):
    client = clients(port, auth_token=jwt.encode({'username': username}, KEY))
    wait_until(lambda: client.state == 'open')
    return client


def members(client):
    """``{socket id: user}`` of the ``#presence`` answer."""
    answer = client.invoke('#presence', {'channel': CHANNEL})
    return {member['socketId']: member['user'] for member in answer['members']}


def publish(client, values):
    answers = []
    for value in values:
        client.publish(CHANNEL, value, lambda err, _data: answers.append(err))
    wait_until(lambda: len(answers) == len(values))
    assert answers == [None] * len(values)


def test_a_client_recovers_on_the_other_instance_and_presence_is_seen_from_both(instances, clients):
    a, b = instances
    ann, bob = connect(clients, a.port, 'ann'), connect(clients, b.port, 'bob')
    joins, received, recoveries = [], [], []
    ann.on('#join', lambda data, respond: joins.append(data))
    channel = ann.subscribe(CHANNEL, data={'joinLeave': True})
    channel.watch(received.append)
    channel.on('recovery', recoveries.append)
    wait_until(lambda: channel.state == 'subscribed')
    bob_channel = bob.subscribe(CHANNEL)
    wait_until(lambda: bob_channel.state == 'subscribed')
    wait_until(lambda: {'channel': CHANNEL, 'socketId': bob.id, 'user': 'bob'} in joins)
    assert members(ann) == members(bob) == {ann.id: 'ann', bob.id: 'bob'}

    publish(bob, [1, 2])
    wait_until(lambda: received == [1, 2])
    epoch = channel.position[1]
    assert channel.position == (2, epoch)
    old_id = ann.id
    ann.disconnect()
    wait_until(lambda: members(bob) == {bob.id: 'bob'})
    publish(bob, [3, 4, 5])  # ann is away: kept in Redis
    ann.port = b.port  # ann comes back through the other instance
    ann.connect()
    wait_until(lambda: recoveries)
    assert recoveries == [{'channel': CHANNEL, 'recovered': True, 'epoch': epoch, 'offset': 5,
                           'missed': 3}]
    assert received == [1, 2, 3, 4, 5]
    publish(bob, [6])
    wait_until(lambda: received[-1] == 6)
    assert received == [1, 2, 3, 4, 5, 6] and channel.position == (6, epoch)
    assert ann.id != old_id and members(bob) == members(ann) == {ann.id: 'ann', bob.id: 'bob'}


def test_a_killed_workers_members_leave_within_the_presence_ttl(instances, clients):
    a, b = instances
    workers = []
    ann = clients(a.port, auth_token=jwt.encode({'username': 'ann'}, KEY))
    ann.on('worker', lambda data, respond: workers.append(data))
    bob = connect(clients, b.port, 'bob')
    leaves = []
    bob.on('#leave', lambda data, respond: leaves.append(data))
    watching = bob.subscribe(CHANNEL, data={'joinLeave': True})
    ann_channel = ann.subscribe(CHANNEL)
    wait_until(lambda: watching.state == ann_channel.state == 'subscribed' and workers)
    killed_id = ann.id
    assert members(bob) == {killed_id: 'ann', bob.id: 'bob'}
    os.kill(workers[0]['pid'], signal.SIGKILL)  # no leave: the entry expires at Redis
    limit = PRESENCE_TTL / 1000.0 + 2 * PRESENCE_REFRESH + 2
    wait_until(lambda: {'channel': CHANNEL, 'socketId': killed_id, 'user': 'ann'} in leaves,
               timeout=limit, interval=0.1)
    wait_until(lambda: killed_id not in members(bob) and ann.id in members(bob), timeout=limit,
               interval=0.2)  # ann is back through the respawned worker, under a new id
