"""permessage-deflate (the perMessageDeflate option, off by default)."""

import json

import pytest
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from conftest import handshake, recv_json


def deflate_offer():
    return [ClientPerMessageDeflateFactory(client_max_window_bits=True)]


def echo_server(make_server, options):
    server = make_server(options)
    server.on('connection', lambda socket, status: socket.on('echo', lambda d, respond: respond(None, d)))
    return server


def test_compression_is_negotiated_and_carries_emits_and_publishes(make_server, raw):
    server = echo_server(make_server, {'perMessageDeflate': True})
    client = raw(server, extensions=deflate_offer())
    assert [type(e).__name__ for e in client.protocol.extensions] == ['PerMessageDeflate']
    plain = raw(server)
    handshake(client)
    handshake(plain)
    big = 'gsc ' * 20000
    client.send(json.dumps({'event': 'echo', 'data': big, 'cid': 2}))
    assert recv_json(client) == {'rid': 2, 'data': big}
    for each in (client, plain):
        each.send('{"event":"#subscribe","data":{"channel":"c"},"cid":3}')
        assert recv_json(each) == {'rid': 3}
    server.exchange.publish('c', big)
    for each in (client, plain):  # one prepared frame for the plain socket, compressed for the other
        assert recv_json(each) == {'event': '#publish', 'data': {'channel': 'c', 'data': big}}
    assert client.protocol.extensions and not plain.protocol.extensions


def test_the_offer_is_declined_when_the_option_is_off(make_server, raw):
    server = echo_server(make_server, {})
    client = raw(server, extensions=deflate_offer())
    assert client.protocol.extensions == []
    handshake(client)
    client.send('{"event":"echo","data":"plain","cid":2}')
    assert recv_json(client) == {'rid': 2, 'data': 'plain'}


def test_a_compressed_message_over_max_payload_closes_with_1009(make_server, raw):
    """maxPayload counts the decompressed size: a small compressed bomb is refused."""
    from wsraw import Closed
    server = echo_server(make_server, {'perMessageDeflate': True, 'maxPayload': 10000})
    client = raw(server, extensions=deflate_offer())
    handshake(client)
    client.send(json.dumps({'event': 'echo', 'data': 'a' * 100000, 'cid': 2}))
    with pytest.raises(Closed) as closed:
        client.recv()
    assert closed.value.code == 1009


def test_bad_deflate_settings_name_the_option(make_server):
    with pytest.raises(Exception, match='perMessageDeflate'):
        make_server({'perMessageDeflate': {'nope': 1}})
