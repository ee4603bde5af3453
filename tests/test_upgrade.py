"""The HTTP side of an upgrade without a socket (gsc/core/upgrade.py): bytes in, an environ or
a refusal out, and the 101 answer."""

import email.parser
import io

import pytest
from geventwebsocket.handler import WebSocketHandler

from gsc.core.upgrade import (SUPPORTED_VERSIONS, WEBSOCKET_GUID, RequestRefused, check_framing,
                              merge_header_lines, parse_upgrade_head, read_header_lines,
                              switching_protocols)

KEY = 'dGhlIHNhbXBsZSBub25jZQ=='
HEAD = ('GET /socketcluster/?x=1 HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\n'
        'Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n'
        'Cookie: a=1\r\nCookie: b=2\r\n\r\n' % KEY)


def head(**replace):
    text = HEAD
    for old, new in replace.items():
        text = text.replace(old.replace('_', ' '), new)
    return text.encode('latin-1')


def test_a_plain_upgrade_becomes_an_environ():
    environ = parse_upgrade_head(head(), '/socketcluster/', 8192)
    assert environ['REQUEST_METHOD'] == 'GET' and environ['PATH_INFO'] == '/socketcluster/'
    assert environ['QUERY_STRING'] == 'x=1' and environ['HTTP_HOST'] == 'example'
    assert environ['HTTP_SEC_WEBSOCKET_KEY'] == KEY
    assert environ['HTTP_COOKIE'] == 'a=1; b=2'


@pytest.mark.parametrize('data', [
    head(GET='POST'),
    head(**{'HTTP/1.1': 'HTTP/1.0'}),
    head(**{'/socketcluster/?x=1': '/other'}),
    head(**{'Upgrade: websocket': 'Upgrade: h2c'}),
    head(**{'Version: 13': 'Version: 12'}),
    head(**{KEY: 'short'}),
    head(**{'Host: example': 'Host: example\r\nContent-Length: 0'}),
    head(**{'Host: example\r\n': 'Host: example\n'}),
    head(**{'Host: example': ' folded'}),
    HEAD.encode('latin-1')[:-2],
], ids=['post', 'http/1.0', 'other path', 'not websocket', 'version', 'bad key', 'body',
        'bare LF', 'obs-fold', 'incomplete'])
def test_anything_unusual_is_left_to_pywsgi(data):
    assert parse_upgrade_head(data, '/socketcluster/', 8192) is None


def test_a_head_over_the_size_limit_is_left_to_pywsgi():
    assert parse_upgrade_head(head(), '/socketcluster/', 100) is None


def test_the_101_answer_carries_the_rfc_6455_accept_value():
    answer = switching_protocols(KEY, 'permessage-deflate')
    assert answer.startswith(b'HTTP/1.1 101 Switching Protocols\r\n')
    assert b'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n' in answer
    assert answer.endswith(b'Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n')


def test_the_versions_and_guid_are_gevent_websocket_s():
    assert SUPPORTED_VERSIONS == WebSocketHandler.SUPPORTED_VERSIONS
    assert WEBSOCKET_GUID == WebSocketHandler.GUID


def test_headers_merge_as_pywsgi_merges_them():
    merged = merge_header_lines(['X-A: 1', 'X-A: 2 ', 'Bad_Name: x', 'Cookie: c=1', 'Cookie: d=2'],
                                str.lower, {})
    assert merged == {'x-a': '1,2', 'cookie': 'c=1; d=2'}


def parsed(text):
    return email.parser.Parser().parsestr(text, headersonly=True)


@pytest.mark.parametrize('text,version', [
    ('Content-Length: 1\r\nTransfer-Encoding: chunked\r\n', 'HTTP/1.1'),
    ('Transfer-Encoding: chunked\r\n', 'HTTP/1.0'),
    ('Transfer-Encoding: gzip\r\n', 'HTTP/1.1'),
    ('Content-Length: 1\r\nContent-Length: 2\r\n', 'HTTP/1.1'),
    ('Content-Length: -1\r\n', 'HTTP/1.1'),
])
def test_ambiguous_framing_is_refused_with_400(text, version):
    with pytest.raises(RequestRefused) as refused:
        check_framing(parsed(text), version)
    assert refused.value.code == '400'
    assert refused.value.response.startswith(b'HTTP/1.1 400 Bad Request\r\nConnection: close')


def test_unambiguous_framing_passes():
    check_framing(parsed('Content-Length: 12\r\n'), 'HTTP/1.1')
    check_framing(parsed('Transfer-Encoding: chunked\r\n'), 'HTTP/1.1')


def test_header_lines_are_read_within_their_budget():
    assert read_header_lines(io.BytesIO(b'A: 1\r\nB: 2\r\n\r\nbody'), 100) == [b'A: 1\r\n', b'B: 2\r\n']
    with pytest.raises(RequestRefused) as refused:
        read_header_lines(io.BytesIO(b'A: ' + b'x' * 200 + b'\r\n\r\n'), 100)
    assert refused.value.code == '431'
    with pytest.raises(RequestRefused):
        read_header_lines(io.BytesIO(b'no colon\r\n\r\n'), 100)
    with pytest.raises(RequestRefused):
        read_header_lines(io.BytesIO(b'A: 1\r\n'), 100)
