"""Hostile HTTP clients: slow or huge headers, ambiguous framing, too many
connections, an exhausted fd limit.  Every test talks to a real server over 127.0.0.1 with
raw sockets and checks what the client sees; the fd-limit tests run the server in a
subprocess that, like a worker, exits on any error that reaches the gevent hub."""

import json
import os
import resource
import socket as stdlib_socket
import ssl
import struct
import subprocess
import sys
import textwrap
import time

import gevent
import pytest
from gevent import socket

from conftest import handshake, read_response_head, recv_json, wait_until
from kit import ROOT, emit_frame, free_port, start_process, stop_process, upgrade_request
from test_master import IPC, start_master  # noqa: F401 (start_master is a fixture)
from test_tls import certificate  # noqa: F401 (a fixture)
from wsraw import RawClient

UPGRADE = upgrade_request()


def hello_app(environ, start_response):
    """A WSGI app that answers the request's body length and the headers it saw."""
    body = environ['wsgi.input'].read()
    answer = json.dumps({'length': len(body), 'x': environ.get('HTTP_X_PAD', '')[:8]}).encode()
    start_response('200 OK', [('Content-Type', 'application/json'),
                              ('Content-Length', str(len(answer)))])
    return [answer]


def connect(port, timeout=5):
    """A raw TCP connection to 127.0.0.1:``port``."""
    return socket.create_connection(('127.0.0.1', port), timeout=timeout)


def read_until_closed(sock, limit=1 << 20):
    """Everything the server sends until it closes (at most ``limit`` bytes)."""
    chunks = []
    size = 0
    while size < limit:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
        size += len(data)
    return b''.join(chunks)



def exchange(port, request):
    """Send ``request`` on a new connection; the server's whole answer once it closed."""
    sock = connect(port)
    try:
        sock.sendall(request)
        return read_until_closed(sock)
    finally:
        sock.close()


def status_of(response):
    """The status code of a raw HTTP response (None for no response)."""
    return int(response.split(b' ', 2)[1]) if response.startswith(b'HTTP/1.') else None


# -- headersTimeout -----------------------------------------------------------


def test_slow_headers_get_408_and_close_after_headers_timeout(make_server):
    """Slowloris: 100 connections trickling a header line every 100 ms are answered 408
    and closed once headersTimeout (300 ms) has passed, although they keep sending."""
    server = make_server({'headersTimeout': 300}, app=hello_app)
    socks = [connect(server.port) for _ in range(100)]
    answers = {}

    def trickle(index, sock):
        sock.sendall(b'GET / HTTP/1.1\r\n')
        try:
            for n in range(100):
                sock.sendall(b'X-Slow-%d: 1\r\n' % n)
                gevent.sleep(0.1)
        except OSError:
            pass

    def listen(index, sock):
        answers[index] = read_until_closed(sock)

    started = time.monotonic()
    writers = [gevent.spawn(trickle, i, s) for i, s in enumerate(socks)]
    readers = [gevent.spawn(listen, i, s) for i, s in enumerate(socks)]
    try:
        gevent.joinall(readers, timeout=8)
        elapsed = time.monotonic() - started
    finally:
        gevent.killall(writers)
        gevent.killall(readers)
        for sock in socks:
            sock.close()
    assert len(answers) == 100
    assert {status_of(answer) for answer in answers.values()} == {408}
    assert elapsed < 8


def test_silent_connection_is_closed_without_an_answer(make_server):
    """A connection that sends nothing is closed after headersTimeout, with no response."""
    server = make_server({'headersTimeout': 300})
    sock = connect(server.port)
    try:
        assert read_until_closed(sock) == b''
    finally:
        sock.close()


def test_keep_alive_request_is_timed_from_its_first_byte(make_server):
    """After a served request, the next one must also complete within headersTimeout."""
    server = make_server({'headersTimeout': 300}, app=hello_app)
    sock = connect(server.port)
    try:
        sock.sendall(b'GET / HTTP/1.1\r\nHost: x\r\n\r\n')
        assert status_of(read_response_head(sock)[0]) == 200
        sock.sendall(b'GET / HTTP/1.1\r\n')
        assert status_of(read_until_closed(sock)) == 408
    finally:
        sock.close()


def test_idle_keep_alive_connection_is_closed(make_server):
    """An idle keep-alive connection is closed (silently) after headersTimeout."""
    server = make_server({'headersTimeout': 300}, app=hello_app)
    sock = connect(server.port)
    try:
        sock.sendall(b'GET / HTTP/1.1\r\nHost: x\r\n\r\n')
        head = read_response_head(sock)[0]
        assert status_of(head) == 200
        rest = read_until_closed(sock)
        assert status_of(rest) is None
    finally:
        sock.close()


# -- maxHeaderSize and the request line -------------------------------------


def test_headers_past_max_header_size_get_431(make_server):
    """Headers larger than maxHeaderSize in total get 431; the WSGI app never sees them."""
    calls = []

    def app(environ, start_response):
        calls.append(environ)
        return hello_app(environ, start_response)
    server = make_server({'maxHeaderSize': 2048}, app=app)
    many = b''.join(b'X-Pad-%d: %s\r\n' % (n, b'a' * 100) for n in range(30))
    answer = exchange(server.port, b'GET / HTTP/1.1\r\nHost: x\r\n' + many + b'\r\n')
    assert status_of(answer) == 431
    one_big = b'X-Pad: ' + b'a' * 4000 + b'\r\n'
    assert status_of(exchange(server.port, b'GET / HTTP/1.1\r\nHost: x\r\n' + one_big + b'\r\n')) == 431
    assert calls == []
    fits = b'X-Pad: ' + b'b' * 1500 + b'\r\n'
    answer = exchange(server.port, b'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n' + fits + b'\r\n')
    assert status_of(answer) == 200
    assert b'"bbbbbbbb"' in answer


def test_upgrade_with_headers_past_max_header_size_gets_431(make_server):
    """The realtime path is bounded too: an upgrade with oversized headers gets 431."""
    server = make_server({'maxHeaderSize': 1024})
    padded = UPGRADE[:-2] + b'X-Pad: ' + b'a' * 1200 + b'\r\n\r\n'
    assert status_of(exchange(server.port, padded)) == 431
    sock = connect(server.port)
    try:
        sock.sendall(UPGRADE)
        assert status_of(read_response_head(sock)[0]) == 101
    finally:
        sock.close()


def test_request_line_too_long_gets_414(make_server):
    """A request line longer than maxHeaderSize (or pywsgi's 8 KiB) gets 414."""
    server = make_server({'maxHeaderSize': 1024}, app=hello_app)
    line = b'GET /' + b'a' * 2000 + b' HTTP/1.1\r\nHost: x\r\n\r\n'
    assert status_of(exchange(server.port, line)) == 414
    longer = b'GET /' + b'a' * 9000 + b' HTTP/1.1\r\nHost: x\r\n\r\n'
    assert status_of(exchange(server.port, longer)) == 414


@pytest.mark.parametrize('header', [
    b'X-Folded: a\r\n continued',
    b'No colon here',
    b'Space before : colon',
])
def test_malformed_header_lines_get_400(make_server, header):
    """Header lines that are not ``token: value`` are refused with 400."""
    server = make_server(app=hello_app)
    answer = exchange(server.port, b'GET / HTTP/1.1\r\nHost: x\r\n' + header + b'\r\n\r\n')
    assert status_of(answer) == 400


def test_request_cut_inside_its_headers_is_not_served(make_server):
    """A client that half-closes inside its headers gets 400, never the app."""
    calls = []

    def app(environ, start_response):
        calls.append(environ)
        return hello_app(environ, start_response)
    server = make_server(app=app)
    sock = connect(server.port)
    try:
        sock.sendall(b'GET / HTTP/1.1\r\nHost: x\r\nX-Half: 1')
        sock.shutdown(stdlib_socket.SHUT_WR)
        assert status_of(read_until_closed(sock)) == 400
    finally:
        sock.close()
    assert calls == []


# -- framing ------------------------------------------------------------------


@pytest.mark.parametrize('version, headers', [
    (b'HTTP/1.1', b'Content-Length: 5\r\nTransfer-Encoding: chunked\r\n'),
    (b'HTTP/1.1', b'Transfer-Encoding: chunked\r\nContent-Length: 5\r\n'),
    (b'HTTP/1.1', b'Transfer-Encoding: gzip, chunked\r\n'),
    (b'HTTP/1.1', b'Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n'),
    (b'HTTP/1.1', b'Transfer-Encoding: identity\r\n'),
    (b'HTTP/1.0', b'Transfer-Encoding: chunked\r\n'),
    (b'HTTP/1.1', b'Content-Length: 5\r\nContent-Length: 6\r\n'),
    (b'HTTP/1.1', b'Content-Length: 1_0\r\n'),
    (b'HTTP/1.1', b'Content-Length: +5\r\n'),
])
def test_ambiguous_framing_gets_400_and_close(make_server, version, headers):
    """Content-Length with Transfer-Encoding, a coding other than one ``chunked``, or a
    Content-Length that is not one decimal number: 400, the connection closed, no app call."""
    calls = []

    def app(environ, start_response):
        calls.append(environ)
        return hello_app(environ, start_response)
    server = make_server(app=app)
    request = b'POST / ' + version + b'\r\nHost: x\r\n' + headers + b'\r\n5\r\nhello\r\n0\r\n\r\n'
    answer = exchange(server.port, request)
    assert status_of(answer) == 400
    assert answer.count(b'HTTP/1.') == 1
    assert calls == []


def test_chunked_and_content_length_bodies_are_served(make_server):
    """Well-framed bodies still reach the app: one ``chunked`` coding, or one Content-Length."""
    server = make_server(app=hello_app)
    chunked = (b'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n'
               b'5\r\nhello\r\n0\r\n\r\n')
    answer = exchange(server.port, chunked)
    assert status_of(answer) == 200 and b'"length": 5' in answer
    sized = b'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc'
    answer = exchange(server.port, sized)
    assert status_of(answer) == 200 and b'"length": 3' in answer


def test_http10_upgrade_gets_400(make_server):
    """An HTTP/1.0 upgrade to the realtime path gets a clean 400 (it was a 500)."""
    server = make_server()
    answer = exchange(server.port, UPGRADE.replace(b'HTTP/1.1', b'HTTP/1.0', 1))
    assert status_of(answer) == 400
    assert b'Connection: close' in answer


# -- maxConnections -------------------------------------------------------------


def test_connection_past_max_connections_gets_503(make_server, raw):
    """maxConnections=3: the 4th connection gets 503 and is closed, the first 3 are still
    served, and a connection is accepted again once one of them closed."""
    server = make_server({'maxConnections': 3}, app=hello_app)
    clients = [raw(server) for _ in range(2)]
    for client in clients:
        handshake(client)
    keep_alive = connect(server.port)
    keep_alive.sendall(b'GET / HTTP/1.1\r\nHost: x\r\n\r\n')
    assert status_of(read_response_head(keep_alive)[0]) == 200
    answer = exchange(server.port, UPGRADE)
    assert status_of(answer) == 503
    assert b'Connection: close' in answer
    assert status_of(exchange(server.port, b'GET / HTTP/1.1\r\nHost: x\r\n\r\n')) == 503
    for cid, client in enumerate(clients, 10):
        client.send(json.dumps({'event': '#subscribe', 'data': {'channel': 'c'}, 'cid': cid}))
        assert recv_json(client) == {'rid': cid}
    keep_alive.sendall(b'GET / HTTP/1.1\r\nHost: x\r\n\r\n')
    assert status_of(read_response_head(keep_alive)[0]) == 200
    clients[0].close()
    wait_until(lambda: server.http_server.connection_count() == 2)
    assert handshake(raw(server))['rid'] == 1
    keep_alive.close()


# -- the fd limit (a server in a subprocess) -------------------------------------

WORKER_SCRIPT = textwrap.dedent('''
    import json, logging, os, resource, sys
    import gevent
    sys.path.insert(0, sys.argv[1])
    from gsc.server import listen

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    hub = gevent.get_hub()
    default_handle_error = hub.handle_error

    def handle_error(context, type_, value, tb):
        # a gsc worker exits on an error that reaches the hub: so does this server
        default_handle_error(context, type_, value, tb)
        if not issubclass(type_, hub.NOT_ERROR) and not issubclass(type_, hub.SYSTEM_ERROR):
            os._exit(3)
    hub.handle_error = handle_error
    spare, options, ssl_kwargs = int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir('/proc/self/fd')) + spare, hard))
    server = listen(0, dict(options, pingInterval=60000), **ssl_kwargs)
    print(server.port, server.http_server.max_connections, flush=True)
    gevent.sleep(60)
''')


@pytest.fixture
def limited_worker():
    """``limited_worker(spare, options=None, **ssl_kwargs) -> (Popen, port, maxConnections)``:
    a server whose fd limit leaves ``spare`` descriptors (maxConnections sized from it
    unless ``options`` say otherwise)."""
    procs = []

    def start(spare, options=None, **ssl_kwargs):
        proc = start_process([sys.executable, '-c', WORKER_SCRIPT, ROOT, str(spare),
                              json.dumps(options or {}), json.dumps(ssl_kwargs)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(proc)
        port, limit = proc.stdout.readline().split()
        return proc, int(port), None if limit == b'None' else int(limit)
    yield start
    for proc in procs:
        stop_process(proc)


def start_upgrades(port, count):
    """``count`` raw connections that send an upgrade request and wait for its answer."""
    socks = [connect(port, timeout=10) for _ in range(count)]
    for sock in socks:
        sock.sendall(UPGRADE)
    return socks, [gevent.spawn(lambda sock=sock: read_response_head(sock)[0]) for sock in socks]


def test_fd_exhaustion_pauses_accepting_and_the_worker_keeps_serving(limited_worker):
    """With the fd limit exhausted, the server neither exits nor drops anyone: connected
    clients are served, the waiting ones are accepted once some clients closed, and the
    accept failure is logged once."""
    proc, port, _limit = limited_worker(20, {'maxConnections': 1000000})
    first = [RawClient('ws://127.0.0.1:%d/socketcluster/' % port) for _ in range(15)]
    socks, heads = start_upgrades(port, 15)
    try:
        gevent.sleep(1)
        waiting = [head for head in heads if not head.ready()]
        assert len(waiting) >= 5
        for client in first:
            assert handshake(client)['rid'] == 1
        assert proc.poll() is None
        for client in first[:12]:
            client.close()
        gevent.joinall(heads, timeout=8)
        assert [status_of(head.value) for head in heads] == [101] * 15
        socks[0].sendall(emit_frame('#handshake', {}, 7))
        assert b'"rid":7' in socks[0].recv(4096)
        assert proc.poll() is None
    finally:
        for client in first:
            client.close()
        for sock in socks:
            sock.close()
    proc.kill()
    stderr = proc.communicate(timeout=5)[1].decode()
    assert stderr.count('accept failed') == 1, stderr


def test_default_max_connections_keeps_a_reserve_of_descriptors(limited_worker):
    """maxConnections sized from a small fd limit: past it clients get 503, not a wait."""
    proc, port, limit = limited_worker(40)
    assert limit is not None and 0 < limit < 40
    socks, heads = start_upgrades(port, limit + 3)
    try:
        gevent.joinall(heads, timeout=8)
        statuses = [status_of(head.value) for head in heads]
        assert statuses.count(101) == limit
        assert statuses.count(503) == 3
        assert proc.poll() is None
    finally:
        for sock in socks:
            sock.close()


def test_client_reset_inside_its_headers_does_not_end_the_worker(limited_worker):
    """A client that resets its connection while the server reads its headers costs
    only that connection (the error never reaches the hub, which would end a worker)."""
    proc, port, _limit = limited_worker(200)
    for _ in range(5):
        sock = connect(port)
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, struct.pack('ii', 1, 0))
        sock.sendall(b'GET / HTTP/1.1\r\nHost: x\r\n')
        gevent.sleep(0.1)
        sock.close()
    gevent.sleep(0.3)
    assert proc.poll() is None
    client = RawClient('ws://127.0.0.1:%d/socketcluster/' % port)
    try:
        assert handshake(client)['rid'] == 1
    finally:
        client.close()
    proc.kill()
    assert 'Traceback' not in proc.communicate(timeout=5)[1].decode()


def test_failed_or_stalled_tls_handshakes_do_not_end_the_worker(limited_worker, certificate):
    """TLS: garbage instead of a ClientHello costs only its connection, a client that
    never starts its handshake is closed after headersTimeout, and TLS clients are served."""
    certfile, keyfile = certificate
    proc, port, _limit = limited_worker(200, {'headersTimeout': 300}, certfile=certfile, keyfile=keyfile)
    for _ in range(3):
        assert not exchange(port, b'GET / HTTP/1.1\r\nHost: x\r\n\r\n' + b'\0' * 1000).startswith(b'HTTP')
    silent = connect(port)
    try:
        assert read_until_closed(silent) == b''
    finally:
        silent.close()
    assert proc.poll() is None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(certfile)
    with context.wrap_socket(connect(port), server_hostname='127.0.0.1') as tls:
        tls.sendall(UPGRADE)
        assert status_of(read_response_head(tls)[0]) == 101
    assert proc.poll() is None


def open_files_limit(pid):
    """The soft and hard 'Max open files' of process ``pid``."""
    with open('/proc/%d/limits' % pid) as f:
        for line in f:
            if line.startswith('Max open files'):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError('no open files limit for %d' % pid)


def test_master_raises_the_open_files_limit_of_its_tree(start_master):  # noqa: F811
    """A master started under a low soft RLIMIT_NOFILE raises it to the hard limit at
    start: its workers (whose default maxConnections is sized from it) inherit the raise."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip('the hard open files limit is too low to lower the soft one')
    port = free_port()
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        master = start_master(dict(IPC, port=port, workers=1, brokers=1))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    master.ready()
    assert open_files_limit(master.pid) == (hard, hard)
    children = master.children()
    assert children
    assert {open_files_limit(pid) for pid in children} == {(hard, hard)}
    client = RawClient('ws://127.0.0.1:%d/socketcluster/' % port)
    try:
        assert handshake(client)['rid'] == 1
    finally:
        client.close()
