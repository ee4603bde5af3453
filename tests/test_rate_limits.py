"""Per-socket inbound rate limits: a socket over them gets RateLimitError answers and, past
the grace, a 4429 close; everyone else on the worker is served as before."""

import json
import time

import gevent

from conftest import handshake, recv_json
from test_hostile_codec import echo_server
from wsraw import Closed


def test_a_socket_over_its_message_rate_is_refused_and_others_are_not(make_server, raw):
    server = echo_server(make_server, inboundMessagesPerSecond=100, rateLimitGrace=60000)
    warnings = []
    server.on('warning', warnings.append)
    flooder, neighbour = raw(server), raw(server)
    handshake(flooder)
    handshake(neighbour)
    flooder.send('[' + ','.join(json.dumps({'event': 'echo', 'data': i, 'cid': i + 2})
                                for i in range(300)) + ']')
    answers = [recv_json(flooder) for _ in range(300)]
    passed = [a for a in answers if 'error' not in a]
    refused = [a for a in answers if 'error' in a]
    # the burst is one second's worth (100, the handshake took one); the rest is refused
    assert 95 <= len(passed) <= 105 and passed == [{'rid': i + 2, 'data': i} for i in range(len(passed))]
    assert {a['error']['name'] for a in refused} == {'RateLimitError'}
    assert refused[0]['error']['message'].startswith('Socket ') and 'rate limits' in refused[0]['error']['message']
    assert sum('RateLimitError' == getattr(w, 'name', None) for w in warnings) == 1
    for i in range(50):
        neighbour.send(json.dumps({'event': 'echo', 'data': i, 'cid': i + 2}))
        assert recv_json(neighbour) == {'rid': i + 2, 'data': i}
    gevent.sleep(0.3)  # 30 tokens back
    flooder.send(json.dumps({'event': 'echo', 'data': 'again', 'cid': 999}))
    assert recv_json(flooder) == {'rid': 999, 'data': 'again'}
    assert server.rate_limited == len(refused)


def test_a_socket_that_stays_over_its_limits_is_closed_with_4429(make_server, raw):
    server = echo_server(make_server, inboundMessagesPerSecond=50, rateLimitGrace=500)
    flooder = raw(server)
    handshake(flooder)
    started = time.monotonic()
    closed = None
    disconnect = None
    with gevent.Timeout(10):
        while closed is None:
            try:
                flooder.send(json.dumps({'event': 'echo', 'data': 1}))
                gevent.sleep(0.001)
                while not flooder.messages.empty():
                    message = flooder.recv(0)
                    if isinstance(message, Closed):
                        closed = message
                    elif '#disconnect' in message:
                        disconnect = json.loads(message)
            except (Closed, OSError) as exc:
                closed = exc if isinstance(exc, Closed) else Closed(flooder.close_code, '')
    assert 0.5 <= time.monotonic() - started < 5
    assert disconnect == {'event': '#disconnect', 'data': {
        'code': 4429, 'data': 'Rate limit exceeded for longer than rateLimitGrace'}}
    assert closed.code == 4429


def test_a_frame_over_the_byte_rate_has_its_events_refused(make_server, raw):
    server = echo_server(make_server, inboundBytesPerSecond=10000, rateLimitGrace=60000)
    client = raw(server)
    handshake(client)
    client.send(json.dumps({'event': 'echo', 'data': 'x' * 20000, 'cid': 2}))
    answer = recv_json(client)
    assert answer['rid'] == 2 and answer['error']['name'] == 'RateLimitError'
    client.send(json.dumps({'event': 'echo', 'data': 'small', 'cid': 3}))
    assert recv_json(client) == {'rid': 3, 'data': 'small'}


def test_limits_can_be_turned_off(make_server, raw):
    server = echo_server(make_server, inboundMessagesPerSecond=None, inboundBytesPerSecond=None)
    client = raw(server)
    handshake(client)
    client.send('[' + ','.join(json.dumps({'event': 'echo', 'data': i, 'cid': i + 2})
                               for i in range(900)) + ']')
    assert all('error' not in recv_json(client) for _ in range(900))
