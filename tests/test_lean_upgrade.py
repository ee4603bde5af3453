"""The lean upgrade reader: an upgrade at the realtime path is recognised from the
first bytes of a connection and answered without pywsgi; anything else reaches the pywsgi
handler with the bytes already read, and is served or refused as before."""

import json
import time

import gevent
import gevent.event
import pytest
from gevent import socket

from conftest import handshake, read_response_head
from kit import OP_TEXT, SAMPLE_KEY, FrameReader, client_frame, recv_frame
from gsc.core.upgrade import parse_upgrade_head
from gsc.server.http import SCHandler
from websockets.utils import accept_key
from wsraw import HandshakeRefused

KEY = SAMPLE_KEY
ACCEPT = accept_key(KEY).encode()
HEAD = ('GET /socketcluster/?v=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n'
        'Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n'
        'Cookie: a=1\r\ncookie: b=2\r\nX-Twice: one\r\nX-Twice:  two \r\nX_Sneaky: 1\r\n\r\n' % KEY).encode()
PATH = '/socketcluster/'


def read_text_frame(sock, rest=b''):
    """The payload of the next server frame, a text frame (``rest``: bytes already read)."""
    opcode, payload = recv_frame(sock, FrameReader(rest))
    assert opcode == OP_TEXT
    return payload.decode()


def counting_handlers(server):
    """Count the pywsgi handlers ``server`` creates from now on."""
    created = []

    class Counted(SCHandler):
        def __init__(self, *args, **kwargs):
            created.append(1)
            super().__init__(*args, **kwargs)
    server.http_server.handler_class = Counted
    return created


def hello_app(environ, start_response):
    """Answer the method, path and body length the app saw."""
    body = environ['wsgi.input'].read()
    answer = json.dumps([environ['REQUEST_METHOD'], environ['PATH_INFO'], len(body)]).encode()
    start_response('200 OK', [('Content-Type', 'application/json'), ('Content-Length', str(len(answer)))])
    return [answer]


# -- the parser (sans-I/O) ------------------------------------------------------


def test_an_upgrade_head_is_read_as_pywsgi_would():
    environ = parse_upgrade_head(HEAD + b'\x81\x80', PATH, 16384)
    assert environ['REQUEST_METHOD'] == 'GET'
    assert environ['PATH_INFO'] == PATH and environ['QUERY_STRING'] == 'v=1'
    assert environ['SERVER_PROTOCOL'] == 'HTTP/1.1'
    assert environ['HTTP_SEC_WEBSOCKET_KEY'] == KEY
    assert environ['HTTP_COOKIE'] == 'a=1; b=2'
    assert environ['HTTP_X_TWICE'] == 'one,two'
    assert not any('SNEAKY' in key for key in environ)  # names with '_' are dropped, as pywsgi does


@pytest.mark.parametrize('change', [
    (b'\r\n\r\n', b'\r\n'),  # the head is not complete
    (b'GET /', b'POST /'),
    (b'HTTP/1.1\r\nHost', b'HTTP/1.0\r\nHost'),
    (b'/socketcluster/?', b'/other/?'),
    (b'/socketcluster/?', b'/socket%63luster/?'),  # pywsgi unescapes the path
    (b'/socketcluster/?', b'http://127.0.0.1/socketcluster/?'),
    (b'v=1 HTTP', b'v=1\x00 HTTP'),
    (b'Host: 127.0.0.1\r\n', b'Host: 127.0.0.1\r\n continued\r\n'),  # obs-fold
    (b'Host: 127.0.0.1\r\n', b'Host : 127.0.0.1\r\n'),
    (b'Host: 127.0.0.1\r\n', b'Host: 127.0.0.1\nX: y\r\n'),  # a bare LF
    (b'Host: 127.0.0.1\r\n', b'Host: 127.\r0.0.1\r\n'),
    (b'Host: 127.0.0.1\r\n', b'Host: 127.0.0.1\r\nContent-Length: 0\r\n'),
    (b'Host: 127.0.0.1\r\n', b'Host: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n'),
    (b'Upgrade: websocket', b'Upgrade: h2c'),
    (b'keep-alive, Upgrade', b'keep-alive'),
    (b'Version: 13', b'Version: 12'),
    (KEY.encode(), b'c2hvcnQ='),
    (b'Cookie: a=1\r\n', b'Sec-WebSocket-Key: %s\r\n' % KEY.encode()),  # two keys
])
def test_anything_else_is_left_to_pywsgi(change):
    old, new = change
    assert old in HEAD
    assert parse_upgrade_head(HEAD.replace(old, new, 1), PATH, 16384) is None


def test_a_head_past_max_header_size_is_left_to_pywsgi():
    assert parse_upgrade_head(HEAD, PATH, len(HEAD)) is not None
    assert parse_upgrade_head(HEAD, PATH, len(HEAD) - 1) is None


# -- a real server ------------------------------------------------------------


def test_a_plain_upgrade_creates_no_pywsgi_handler(make_server, raw):
    server = make_server()
    created = counting_handlers(server)
    client = raw(server)
    assert handshake(client)['data']['isAuthenticated'] is False
    assert created == [] and server.clients_count == 1


def test_frames_sent_with_the_upgrade_are_delivered(make_server):
    """A client may send its #handshake without waiting for the 101: one packet holds both."""
    server = make_server()
    sock = socket.create_connection(('127.0.0.1', server.port), timeout=5)
    try:
        sock.sendall(HEAD + client_frame('{"event":"#handshake","data":{},"cid":1}'))
        head, rest = read_response_head(sock)
        assert head.startswith(b'HTTP/1.1 101 ')
        assert b'Sec-WebSocket-Accept: ' + ACCEPT in head
        answer = json.loads(read_text_frame(sock, rest))
        assert answer['rid'] == 1 and answer['data']['id'] in server.clients
    finally:
        sock.close()


def test_an_upgrade_sent_in_pieces_is_upgraded_by_pywsgi(make_server):
    server = make_server()
    created = counting_handlers(server)
    sock = socket.create_connection(('127.0.0.1', server.port), timeout=5)
    try:
        sock.sendall(HEAD[:40])
        gevent.sleep(0.05)
        sock.sendall(HEAD[40:])
        head, rest = read_response_head(sock)
        assert head.startswith(b'HTTP/1.1 101 ') and b'Sec-WebSocket-Accept: ' + ACCEPT in head
        sock.sendall(client_frame('{"event":"#handshake","data":{},"cid":7}'))
        assert json.loads(read_text_frame(sock, rest))['rid'] == 7
        assert created == [1]
    finally:
        sock.close()


def test_socket_request_is_the_same_whichever_reader_took_the_upgrade(make_server):
    """The lean reader keeps the head and parses ``socket.request.headers`` when asked; pywsgi's
    environ gives them at once: the same request either way."""
    server = make_server()
    created = counting_handlers(server)
    requests = []
    server.on('connection', lambda sc_socket, *_: requests.append(sc_socket.request))
    for pieces in ((HEAD,), (HEAD[:40], HEAD[40:])):
        sock = socket.create_connection(('127.0.0.1', server.port), timeout=5)
        try:
            for piece in pieces:
                sock.sendall(piece)
                gevent.sleep(0.05)
            head, rest = read_response_head(sock)
            assert head.startswith(b'HTTP/1.1 101 ')
            sock.sendall(client_frame('{"event":"#handshake","data":{},"cid":1}'))
            assert json.loads(read_text_frame(sock, rest))['rid'] == 1
        finally:
            sock.close()
    assert created == [1]  # the second went through pywsgi
    lean, wsgi = requests
    assert lean.headers == wsgi.headers
    assert lean.headers['cookie'] == 'a=1; b=2' and lean.headers['x-twice'] == 'one,two'
    assert lean.headers['sec-websocket-key'] == KEY
    assert not any('sneaky' in name for name in lean.headers)
    for req in (lean, wsgi):
        assert (req.method, req.url, req.path, req.query) == ('GET', PATH + '?v=1', PATH, 'v=1')
        assert req.remote_address == '127.0.0.1' and req.remote_family == 'IPv4'
        assert isinstance(req.remote_port, int) and req.forwarded_for_address is None
        assert repr(req) == 'UpgradeRequest(GET %s?v=1)' % PATH
        req.user_note = 'set by the app'  # applications may add attributes, and set the fields
        req.url = PATH
        assert req.user_note == 'set by the app' and req.url == PATH
    lean.headers = {'x': 'replaced'}
    assert lean.headers == {'x': 'replaced'}


def test_a_slow_upgrade_still_gets_408_within_headers_timeout(make_server):
    """The time the lean reader waited counts: the pywsgi handler gets only the rest."""
    server = make_server({'headersTimeout': 400})
    sock = socket.create_connection(('127.0.0.1', server.port), timeout=5)
    started = time.monotonic()

    def trickle():
        sock.sendall(HEAD[:40])
        for _ in range(100):
            gevent.sleep(0.05)
            sock.sendall(b'X-Slow: 1\r\n')
    writer = gevent.spawn(trickle)
    try:
        data = sock.recv(4096)
        elapsed = time.monotonic() - started
    finally:
        writer.kill()
        sock.close()
    assert data.startswith(b'HTTP/1.1 408 ')
    assert elapsed < 5  # a sanity bound only: headersTimeout is 0.4 s


def test_wsgi_requests_read_with_the_first_bytes_reach_the_app(make_server):
    """A POST whose body (and a pipelined second request) came in the first packet."""
    server = make_server(app=hello_app)
    sock = socket.create_connection(('127.0.0.1', server.port), timeout=5)
    try:
        sock.sendall(b'POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello'
                     b'GET /socketcluster/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
        data = b''
        for _ in range(100):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    first, second = data.split(b'HTTP/1.1 ')[1:]
    assert first.startswith(b'200 ') and first.endswith(b'["POST", "/form", 5]')
    assert second.startswith(b'426 ')  # the realtime path without an upgrade, as before


def test_an_origin_refused_on_the_lean_path_gets_403(make_server, raw):
    server = make_server({'origins': 'example.com:80'})
    warnings = []
    server.on('warning', warnings.append)
    with pytest.raises(HandshakeRefused) as refused:
        raw(server, headers={'Origin': 'http://evil.com'})
    assert refused.value.status == 403
    assert b'Invalid origin: http://evil.com' in refused.value.body
    assert len(warnings) == 1
    client = raw(server, headers={'Origin': 'http://example.com'})
    assert handshake(client)['rid'] == 1


def test_handshake_ws_middleware_sees_the_wsgi_environ(make_server, raw):
    server = make_server()
    seen = []

    def middleware(req, next_):
        seen.append(req)
        next_(None if req.query == 'ok=1' else Exception('Not this one'))
    server.add_middleware(server.MIDDLEWARE_HANDSHAKE_WS, middleware)
    with pytest.raises(HandshakeRefused) as refused:
        raw(server, path='/socketcluster/?ok=0')
    assert refused.value.status == 401 and refused.value.body == b'Not this one'
    client = raw(server, path='/socketcluster/?ok=1', headers={'X-Custom': 'yes'})
    assert handshake(client)['rid'] == 1
    req = seen[-1]
    assert req.headers['x-custom'] == 'yes' and req.remote_address == '127.0.0.1'
    environ = req.environ
    assert environ['HTTP_X_CUSTOM'] == 'yes' and environ['QUERY_STRING'] == 'ok=1'
    assert environ['PATH_INFO'] == PATH and environ['wsgi.url_scheme'] == 'http'
    assert environ['REMOTE_PORT'] == str(req.remote_port)


def test_an_upgrade_waiting_for_its_middleware_counts_against_max_connections(make_server, raw):
    """maxConnections=1: while a handshakeWS middleware holds the first upgrade, a second
    connection gets 503; once the first is served it is still the only one counted."""
    server = make_server({'maxConnections': 1})
    release = gevent.event.Event()
    server.add_middleware(server.MIDDLEWARE_HANDSHAKE_WS, lambda req, next_: release.wait(5) and next_())
    first = gevent.spawn(raw, server)
    gevent.sleep(0.1)
    assert server.http_server.connection_count() == 1
    sock = socket.create_connection(('127.0.0.1', server.port), timeout=5)
    try:
        sock.sendall(HEAD)
        head, _ = read_response_head(sock)
    finally:
        sock.close()
    assert head.startswith(b'HTTP/1.1 503 ')
    release.set()
    assert handshake(first.get(timeout=5))['rid'] == 1
    assert server.http_server.connection_count() == 1
