"""Channel presence on a standalone server (SimpleEngine): members, #join/#leave, #presence,
maxMembers, and the reserved #gsc/ channels.  Real server on 127.0.0.1, gsc's Python client."""

import gevent
import jwt
import pytest

from conftest import wait_until
from gsc.errors import InvalidOptionsError
from gsc.server import listen

KEY = 'presence-test-key'
PRESENCE = {'room/*': {'maxMembers': 3}, 'quiet/*': {'joinLeave': False, 'userField': 'id'}}


def server_with_presence(make_server, **options):
    return make_server(dict({'authKey': KEY, 'channelPresence': PRESENCE}, **options))


def connect(clients, server, **token):
    client = clients(server.port, auth_token=jwt.encode(token, KEY) if token else None)
    wait_until(lambda: client.state == 'open')
    return client


def subscribed(client, channel, data=None):
    chan = client.subscribe(channel, data=data)
    wait_until(lambda: chan.state == 'subscribed')
    return chan


def users(server, channel):
    return sorted(str(info['user']) for info in server.exchange.presence(channel).values())


def test_members_follow_subscribe_unsubscribe_and_close(make_server, clients):
    server = server_with_presence(make_server)
    ann = connect(clients, server, username='ann')
    bob = connect(clients, server, username='bob')
    anonymous = connect(clients, server)
    chan = subscribed(ann, 'room/1')
    subscribed(bob, 'room/1')
    subscribed(anonymous, 'room/1')
    subscribed(ann, 'lobby')  # no presence there
    members = server.exchange.presence('room/1')
    assert sorted(members) == sorted([ann.id, bob.id, anonymous.id])
    assert members[ann.id] == {'user': 'ann', 'worker': None}
    assert members[anonymous.id]['user'] is None
    chan.unsubscribe()
    wait_until(lambda: users(server, 'room/1') == ['None', 'bob'])
    bob.disconnect()
    wait_until(lambda: users(server, 'room/1') == ['None'])
    server.clients[anonymous.id].kick_out('room/1')
    wait_until(lambda: server.exchange.presence('room/1') == {})
    with pytest.raises(Exception) as info:
        server.exchange.presence('lobby')
    assert 'no presence' in str(info.value)


def test_join_and_leave_events_to_sockets_that_asked(make_server, clients):
    server = server_with_presence(make_server)
    watcher = connect(clients, server, username='watcher')
    plain = connect(clients, server, username='plain')
    events, plain_events = [], []
    watcher.on('#join', lambda data, respond: events.append(('join', data)))
    watcher.on('#leave', lambda data, respond: events.append(('leave', data)))
    plain.on('#join', lambda data, respond: plain_events.append(data))
    subscribed(watcher, 'room/1', data={'joinLeave': True})
    subscribed(plain, 'room/1')
    plain_id = plain.id
    wait_until(lambda: ('join', {'channel': 'room/1', 'socketId': plain_id, 'user': 'plain'}) in events)
    assert ('join', {'channel': 'room/1', 'socketId': watcher.id, 'user': 'watcher'}) in events
    plain.disconnect()
    wait_until(lambda: ('leave', {'channel': 'room/1', 'socketId': plain_id, 'user': 'plain'}) in events)
    assert plain_events == []


def test_join_leave_off_by_policy(make_server, clients):
    server = server_with_presence(make_server)
    watcher = connect(clients, server, id=7)
    events = []
    watcher.on('#join', lambda data, respond: events.append(data))
    subscribed(watcher, 'quiet/1', data={'joinLeave': True})
    other = connect(clients, server, id=8)
    subscribed(other, 'quiet/1')
    assert users(server, 'quiet/1') == ['7', '8']  # userField 'id'
    gevent.sleep(0.2)
    assert events == []


def test_presence_query_runs_the_subscribe_middleware(make_server, clients):
    server = server_with_presence(make_server)
    refused = []

    def subscribe_middleware(req, next_):
        if req.channel == 'room/secret':
            refused.append(req.socket.id)
            next_(Exception('not in this room'))
        else:
            next_()
    server.add_middleware(server.MIDDLEWARE_SUBSCRIBE, subscribe_middleware)
    ann = connect(clients, server, username='ann')
    subscribed(ann, 'room/1')
    asker = connect(clients, server)
    answer = asker.invoke('#presence', {'channel': 'room/1'})
    assert answer == {'members': [{'socketId': ann.id, 'user': 'ann'}]}
    with pytest.raises(Exception) as info:
        asker.invoke('#presence', {'channel': 'room/secret'})
    assert 'not in this room' in str(info.value) and refused == [asker.id]
    with pytest.raises(Exception) as info:
        asker.invoke('#presence', {'channel': 'lobby'})
    assert 'no presence' in str(info.value)
    with pytest.raises(Exception) as info:
        asker.invoke('#presence', {'channel': None})
    assert 'needs a channel field' in str(info.value) and 'None' not in str(info.value)


def test_max_members_refuses_the_subscription(make_server, clients):
    server = server_with_presence(make_server)
    members = [connect(clients, server, username='u%d' % i) for i in range(3)]
    for client in members:
        subscribed(client, 'room/full')
    late = connect(clients, server, username='late')
    failures = []
    chan = late.subscribe('room/full')
    chan.on('subscribeFail', lambda err, name: failures.append(err))
    wait_until(lambda: failures)
    assert 'full' in str(failures[0]) and 'maxMembers is 3' in str(failures[0])
    assert len(server.exchange.presence('room/full')) == 3
    assert len(late.invoke('#presence', {'channel': 'room/full'})['members']) == 3
    members[0].disconnect()
    wait_until(lambda: len(server.exchange.presence('room/full')) == 2)
    subscribed(late, 'room/full')
    assert 'late' in users(server, 'room/full')


def test_reserved_channels_are_refused(make_server, clients):
    server = server_with_presence(make_server)
    client = connect(clients, server, username='ann')
    failures = []
    chan = client.subscribe('#gsc/presence/room/1')
    chan.on('subscribeFail', lambda err, name: failures.append(err))
    wait_until(lambda: failures)
    assert 'reserved channel' in str(failures[0])
    with pytest.raises(Exception) as info:
        client.invoke('#publish', {'channel': '#gsc/presence/room/1',
                                   'data': {'event': 'join', 'socketId': 'fake', 'user': 'x'}})
    assert 'reserved channel' in str(info.value)
    with pytest.raises(Exception) as info:
        client.invoke('#presence', {'channel': '#gsc/presence/room/1'})
    assert 'reserved channel' in str(info.value)
    assert client.state == 'open'


@pytest.mark.parametrize('option', [[], {'room/*': {'maxMembers': -1}}, {'room/*': {'x': 1}}])
def test_bad_channel_presence_option_fails_the_start(option):
    with pytest.raises(InvalidOptionsError) as info:
        listen(0, {'channelPresence': option})
    assert 'channelPresence' in str(info.value)
