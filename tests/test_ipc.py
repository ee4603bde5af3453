"""gsc.cluster.ipc.Channel over a socketpair, in one process: answers, errors, timeouts, broken
links, partial and oversized frames, garbage, flooding."""

import socket
import struct

import gevent
import gevent.event
import gevent.socket
import pytest

from gsc.core import codec
from gsc.errors import SCError
from gsc.cluster.ipc import Channel

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def pair(request):
    """Two started channels; the right one answers ``echo``, fails ``fail``, ignores ``mute``."""
    left_sock, right_sock = socket.socketpair()
    received = []

    def on_right(message, respond):
        received.append(message)
        if message['type'] == 'echo':
            respond(None, message['data'])
        elif message['type'] == 'fail':
            err = SCError('broken on purpose')
            err.name = 'MyCustomError'
            respond(err)

    left = Channel(left_sock.detach(), lambda m, r: received.append(m), ack_timeout=300,
                   name='left').start()
    right = Channel(right_sock.detach(), on_right, ack_timeout=300, name='right').start()
    request.addfinalizer(lambda: (left.close(), right.close()))
    return left, right, received


def call(channel, type_, data=None, **kwargs):
    result = gevent.event.AsyncResult()
    channel.send(type_, data, lambda err, answer: result.set((err, answer)), **kwargs)
    return result.get(timeout=5)



def test_request_and_answer(pair):
    left, _right, _ = pair
    assert call(left, 'echo', {'a': [1, 'é']}) == (None, {'a': [1, 'é']})


def test_error_keeps_name_message_and_stack(pair):
    err, data = call(pair[0], 'fail')
    assert err.name == 'MyCustomError' and err.message == 'broken on purpose'
    assert 'test_ipc.py' in err.stack and data is None


def test_timeout(pair):
    err, _ = call(pair[0], 'mute')
    assert err.name == 'TimeoutError' and err.message == 'IPC response timed out'


def test_no_callback_no_cid(pair):
    left, _right, received = pair
    left.send('note', 1)
    gevent.sleep(0.05)
    assert received[-1] == {'type': 'note', 'data': 1}


def test_broken_link_fails_pending_calls_at_once(pair):
    left, right, _ = pair
    results = []
    left.send('mute', None, lambda err, data: results.append(err), timeout=None)
    gevent.sleep(0.05)
    right.close()
    gevent.sleep(0.05)
    assert results and results[0].name == 'BadConnectionError'
    assert left.closed
    err, _ = call(left, 'echo', 1)
    assert err.name == 'BadConnectionError'


def raw_channel(on_message):
    ours, theirs = gevent.socket.socketpair()
    channel = Channel(theirs.detach(), on_message, name='raw').start()
    return ours, channel


def frame(obj):
    payload = codec.encode(obj).encode()
    return struct.pack('>I', len(payload)) + payload


def test_partial_frames_byte_by_byte():
    received = []
    ours, channel = raw_channel(lambda m, r: received.append(m))
    data = frame({'type': 'a', 'data': 'x' * 1000}) + frame({'type': 'b'})
    for i in range(len(data)):
        ours.send(data[i:i + 1])
        if i % 97 == 0:
            gevent.sleep(0)
    gevent.sleep(0.05)
    assert [m['type'] for m in received] == ['a', 'b']
    channel.close()
    ours.close()


def test_garbage_and_oversized_frames_close_the_link():
    received = []
    ours, channel = raw_channel(lambda m, r: received.append(m))
    ours.sendall(frame([1, 2]) + frame({'no': 'type'}) + frame({'type': 'ok'}))
    gevent.sleep(0.05)
    assert [m['type'] for m in received] == ['ok'] and not channel.closed
    ours.sendall(b'\xff\xff\xff\xff')
    gevent.sleep(0.05)
    assert channel.closed and 'exceeds the limit' in channel.close_reason
    ours.close()


def test_flood_does_not_starve_other_greenlets():
    count = [0]
    ours, channel = raw_channel(lambda m, r: count.__setitem__(0, count[0] + 1))
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(1) or gevent.sleep(0) for _ in range(1000)])
    writer = gevent.spawn(lambda: ours.sendall(frame({'type': 'x'}) * 20000))
    gevent.joinall([writer], timeout=10)
    deadline = gevent.Timeout(10)
    with deadline:
        while count[0] < 20000:
            gevent.sleep(0.01)
    assert ticks
    ticker.kill()
    channel.close()
    ours.close()


def test_writes_never_block_when_the_peer_does_not_read():
    ours, theirs = socket.socketpair()
    channel = Channel(theirs.detach(), lambda m, r: None, name='stuck')
    for _ in range(100):
        channel.send('big', 'y' * 100000)
    assert not channel.closed
    assert channel.drain(timeout=0.05) is False
    channel.close()
    ours.close()
