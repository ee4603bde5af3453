"""gsc.aio, the asyncio client, against a real gsc cluster (1 worker, 1 broker) in a subprocess:
each test drives it from ``asyncio.run`` with a timeout."""

import asyncio
import os
import signal

import jwt
import pytest

from gsc import aio
from gsc.core.client_state import reconnects_after
from gsc.errors import (AuthTokenInvalidError, BadConnectionError, InvalidActionError,
                        InvalidArgumentsError, TimeoutError)
from master_harness import start_cluster

AUTH_KEY = 'aio-test-key'
OPTIONS = {'workers': 1, 'brokers': 1, 'workerController': 'tests.controllers.aio_worker',
           'authKey': AUTH_KEY, 'channelHistory': {'hist/*': {'size': 100}}}
FAST_RECONNECT = {'initialDelay': 50, 'randomness': 0, 'multiplier': 1.5, 'maxDelay': 500}


@pytest.fixture(scope='module')
def cluster(request):
    return start_cluster(request, OPTIONS)


def run(coroutine, timeout=20):
    """Run ``coroutine`` in a new event loop, failing after ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


def client(cluster, **options):
    options.setdefault('auto_reconnect_options', FAST_RECONNECT)
    return aio.create(port=cluster.port, **options)


async def until(predicate, timeout=5):
    """Sleep until ``predicate()`` is true."""
    async def poll():
        while not predicate():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), timeout)


def test_reconnect_policy_of_close_codes():
    assert reconnects_after(4000) == 0 and reconnects_after(1005) == 0
    assert reconnects_after(1006) is None and reconnects_after(4499) is None
    assert reconnects_after(1000) is False and reconnects_after(4500) is False


def test_handshake_status(cluster):
    async def main():
        async with client(cluster) as socket:
            status = socket.status
            assert socket.state == 'open' and socket.id == status['id']
            assert status['pingTimeout'] == 20000 and status['isAuthenticated'] is False
            assert status['authToken'] is None
            assert await socket.connect() is status  # already open
        assert socket.state == 'closed'
    run(main())


def test_invoke_answers_with_data_or_raises_the_error(cluster):
    async def main():
        async with client(cluster) as socket:
            assert await socket.invoke('echo', {'a': [1, None]}) == {'a': [1, None]}
            assert await socket.invoke('echo') is None
            with pytest.raises(InvalidArgumentsError) as failure:
                await socket.invoke('fail', 7)
            assert str(failure.value) == 'bad input 7' and failure.value.field == 'n'
            with pytest.raises(TimeoutError):
                await socket.invoke('nobody-answers', timeout=0.2)
            with pytest.raises(InvalidActionError):
                await socket.invoke('connect')
            results = await asyncio.gather(*(socket.invoke('echo', n) for n in range(50)))
            assert results == list(range(50))
    run(main())


def test_a_call_before_the_connection_connects_and_waits_for_the_handshake(cluster):
    async def main():
        socket = client(cluster)
        try:
            assert socket.state == 'closed'
            assert await socket.invoke('echo', 'early') == 'early'
            assert socket.state == 'open'
        finally:
            await socket.destroy()
        with pytest.raises(InvalidActionError):
            await socket.connect()
    run(main())


def test_a_server_call_is_answered_by_the_handler(cluster):
    async def main():
        async with client(cluster) as socket:
            socket.on('question', lambda n: n * 2)
            assert await socket.invoke('ask', 21) == 42
            socket.off('question')

            async def slow_double(n):  # a coroutine handler may await calls of its client
                return await socket.invoke('echo', n) * 2
            socket.on('question', slow_double)
            assert await socket.invoke('ask', 5) == 10
            socket.off('question')

            def refuse(n):
                raise InvalidArgumentsError('no %s' % n)
            socket.on('question', refuse)
            with pytest.raises(InvalidArgumentsError, match='no 3'):
                await socket.invoke('ask', 3)
    run(main())


def test_publish_round_trip_keeps_null_and_left_out_data_apart(cluster):
    async def main():
        async with client(cluster) as socket:
            frames = []
            socket.on('message', frames.append)
            channel = await socket.subscribe('news')
            assert channel.state == 'subscribed' and socket.subscriptions() == ['news']
            watched = []
            channel.watch(watched.append)
            messages = channel.messages()
            for data in ('hi', None):
                await socket.publish('news', data)
            await channel.publish()
            assert [await messages.__anext__() for _ in range(3)] == ['hi', None, None]
            assert watched == ['hi', None, None]
            publishes = [frame for frame in frames if '"#publish"' in frame]
            assert publishes == ['{"event":"#publish","data":{"channel":"news","data":"hi"}}',
                                 '{"event":"#publish","data":{"channel":"news","data":null}}',
                                 '{"event":"#publish","data":{"channel":"news"}}']
    run(main())


def test_watchers_and_iterators_and_the_bounded_queue(cluster, caplog):
    async def main():
        async with client(cluster) as socket:
            channel = await socket.subscribe('bounded')
            got = []

            async def watcher(data):  # a coroutine watcher runs as a task
                got.append(data)
            channel.watch(watcher)
            behind = channel.messages(queue_size=2)
            for n in range(5):
                await socket.publish('bounded', n)
            await until(lambda: len(got) == 5)
            assert got == [0, 1, 2, 3, 4]

            async def read_all():
                return [message async for message in behind]
            reader = asyncio.ensure_future(read_all())
            await asyncio.sleep(0.05)
            channel.unsubscribe()  # ends the iteration
            assert await reader == [3, 4]
            assert channel.state == 'unsubscribed'
    run(main())
    assert any('dropped' in record.getMessage() for record in caplog.records)


def test_authenticate_with_a_token_signed_with_the_auth_key(cluster):
    async def main():
        async with client(cluster) as socket:
            events = []
            socket.on('authenticate', events.append)
            token = jwt.encode({'username': 'ann'}, AUTH_KEY, algorithm='HS256')
            status = await socket.authenticate(token)
            assert status == {'isAuthenticated': True, 'authError': None}
            assert socket.auth_state == 'authenticated' and events == [token]
            assert socket.auth_token == {'username': 'ann'}
            assert (await socket.invoke('whoami'))['username'] == 'ann'
            await socket.disconnect()
            status = await socket.connect()  # the token goes with the next handshake
            assert status['isAuthenticated'] is True and status['authToken'] == token

            bad = jwt.encode({'username': 'eve'}, 'another-key', algorithm='HS256')
            with pytest.raises(AuthTokenInvalidError) as refused:
                await socket.authenticate(bad)
            assert refused.value.status['isAuthenticated'] is False
            assert isinstance(refused.value.status['authError'], AuthTokenInvalidError)
            assert socket.auth_state == 'unauthenticated'
            assert await socket.invoke('whoami') is None
    run(main())


def test_kick_out_unsubscribes_and_ends_the_iteration(cluster):
    async def main():
        async with client(cluster) as socket:
            channel = await socket.subscribe('room')
            kicks = []
            channel.on('kickOut', lambda message, name: kicks.append((message, name)))
            messages = channel.messages()
            await socket.invoke('kick', 'room')
            await until(lambda: kicks)
            assert kicks == [('bye', 'room')] and channel.state == 'unsubscribed'
            assert [message async for message in messages] == []
    run(main())


def test_history_recovery_after_a_reconnect(cluster):
    async def main():
        async with client(cluster) as subscriber, client(cluster) as publisher:
            channel = await subscriber.subscribe('hist/1')
            recoveries = []
            channel.on('recovery', recoveries.append)
            messages = channel.messages()
            for n in (1, 2, 3):
                await publisher.publish('hist/1', n)
            assert [await messages.__anext__() for _ in range(3)] == [1, 2, 3]
            offset, epoch = channel.position
            await subscriber.disconnect()
            assert channel.state == 'pending'
            for n in (4, 5, 6):
                await publisher.publish('hist/1', n)
            await subscriber.connect()
            assert [await messages.__anext__() for _ in range(3)] == [4, 5, 6]
            await until(lambda: recoveries)
            assert recoveries[0]['recovered'] is True and recoveries[0]['missed'] == 3
            assert recoveries[0]['epoch'] == epoch and channel.position == (offset + 3, epoch)
    run(main())


def test_an_asyncio_app_runs_several_clients_in_one_loop(cluster):
    async def member(n, ready, everyone):
        async with client(cluster) as socket:
            channel = await socket.subscribe('app/room')
            messages = channel.messages()
            ready.append(n)
            await until(lambda: len(ready) == everyone)
            await socket.publish('app/room', n)
            got = sorted([await messages.__anext__() for _ in range(everyone)])
            echoes = await asyncio.gather(*(socket.invoke('echo', [n, k]) for k in range(10)))
            return got, echoes

    async def main():
        ready = []
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(member(n, ready, 5)) for n in range(5)]
        for n, task in enumerate(tasks):
            got, echoes = task.result()
            assert got == [0, 1, 2, 3, 4]
            assert echoes == [[n, k] for k in range(10)]
    run(main())


def test_a_worker_kill_reconnects_resubscribes_and_recovers(cluster):
    async def main():
        socket = client(cluster)
        try:
            workers = []
            socket.on('worker', workers.append)
            await socket.connect()
            await until(lambda: workers)
            channel = await socket.subscribe('hist/kill')
            recoveries = []
            channel.on('recovery', recoveries.append)
            messages = channel.messages()
            await socket.publish('hist/kill', 'before')
            assert await messages.__anext__() == 'before'
            closes = []
            socket.on('disconnect', lambda code, data: closes.append(code))
            with pytest.raises(BadConnectionError):
                waiting = asyncio.ensure_future(socket.invoke('question-never-answered', timeout=15))
                await asyncio.sleep(0.05)
                os.kill(workers[0]['pid'], signal.SIGKILL)
                await waiting
            await until(lambda: closes, timeout=10)
            assert closes == [1006] and channel.state == 'pending'
            await socket.wait_for('subscribe', timeout=30)  # after the new worker's handshake
            assert channel.state == 'subscribed' and socket.state == 'open'
            await until(lambda: len(workers) == 2)
            assert workers[1]['pid'] != workers[0]['pid']
            await until(lambda: recoveries)
            assert recoveries[0]['recovered'] is True and recoveries[0]['missed'] == 0
            await socket.publish('hist/kill', 'after')
            assert await messages.__anext__() == 'after'
        finally:
            await socket.destroy()
    run(main(), timeout=60)
