"""The worker's HTTP server: WebSocket upgrades at the SocketCluster path go to gsc,
every other request goes to the WSGI application (Flask, Django, ...).

A plain connection's first bytes are read at once by the lean upgrade reader: a complete,
well-formed upgrade at the realtime path (:func:`parse_upgrade_head`) is answered with the
101 right there and served by gsc in the same greenlet, without pywsgi's request parsing.
Anything else (another path, a partial or unusual head, TLS, an access log) is handed, with
the bytes already read, to the pywsgi handler, which serves, refuses or upgrades it exactly
as before: gevent-websocket's checks, then gsc's own refusals (path, origin, handshakeWS
middleware), then the 101 (the frames are carried by :mod:`gsc.transport`).

Against hostile clients the server bounds what a connection may hold before the
application sees it: the request line and headers must arrive within ``headersTimeout``
and fit in ``maxHeaderSize``, ambiguous framing is refused, a worker serves at most
``maxConnections`` connections (503 past it) and an accept that fails for want of file
descriptors pauses the accept loop instead of ending the worker.
"""

import base64
import binascii
import email.parser
import errno
import hashlib
import io
import logging
import re
import resource
import socket as stdlib_socket
import time

from gevent import Greenlet, GreenletExit, Timeout, pywsgi
from gevent.pywsgi import MAX_REQUEST_LINE, LoggingLogAdapter, OldMessage
from gevent.socket import SocketIO, socket as GeventSocket
from geventwebsocket.handler import WebSocketHandler

from ..errors import SCError
from ..reporting import WarningDigest
from ..core.options import SERVER, defaults

log = logging.getLogger(__name__)

BAD_REQUEST = ('400 Bad Request', 'Bad Request')
UPGRADE_REQUIRED = ('426 Upgrade Required', 'Upgrade Required')
NOT_FOUND = ('404 Not Found', 'Not Found')
NOT_IMPLEMENTED = ('501 Not Implemented', 'Not Implemented')
URI_TOO_LONG = '414 Request-URI Too Long'
HEADERS_TOO_LARGE = '431 Request Header Fields Too Large'


def _close_response(status, body=b''):
    return ('HTTP/1.1 %s\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n'
            'Content-Length: %d\r\n\r\n' % (status, len(body))).encode('latin-1') + body


REQUEST_TIMEOUT_RESPONSE = _close_response('408 Request Timeout')
SERVICE_UNAVAILABLE_RESPONSE = _close_response('503 Service Unavailable', b'Service Unavailable')

HEADER_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:")
"""A header line starts with a token and a colon (no obs-fold, no space before the colon)."""
HEADER_NAME = re.compile(HEADER_LINE.pattern.decode('ascii'))
"""HEADER_LINE for a decoded line (the lean upgrade reader's)."""
DIGITS = re.compile(r'[0-9]+')

HEAD_END = b'\r\n\r\n'
SUPPORTED_VERSIONS = WebSocketHandler.SUPPORTED_VERSIONS
WEBSOCKET_GUID = WebSocketHandler.GUID

FD_RESERVE_MIN = 32
"""File descriptors kept, past maxConnections, for the worker's own files and links (at
least this, or a tenth of the limit)."""
ACCEPT_ERRORS_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
ACCEPT_ERRORS_OF_ONE_PEER = frozenset((errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENETDOWN,
                                       errno.ENOPROTOOPT, errno.EHOSTDOWN, errno.ENONET,
                                       errno.EHOSTUNREACH, errno.EOPNOTSUPP, errno.ENETUNREACH))
"""accept(2): errors of a connection that died in the queue; the next one may be fine."""
ACCEPT_BACKOFF = (0.05, 1.0)
"""First and longest pause of the accept loop while file descriptors are exhausted (s)."""
REFUSAL_LINGER = 1.0
"""Longest wait (s) for a refused client to close after the 503 (its request is drained, so
the close does not reset the connection before the client read the answer)."""
REFUSAL_DRAIN_BYTES = 65536


def _log_warning(warning):
    log.warning('%s', warning)


class RequestRefused(ValueError):
    """A request gsc will not pass on; ``response`` is the complete answer (the connection closes)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.code = status[:3]
        self.response = _close_response(status)


def is_upgrade(environ):
    """True for a request that asks for a WebSocket."""
    return environ.get('HTTP_UPGRADE', '').lower() == 'websocket'


def check_framing(headers, version):
    """Raise RequestRefused (400) unless the body's length is unambiguous: a single
    ``Transfer-Encoding: chunked`` (HTTP/1.1 only) or one decimal Content-Length, never both."""
    codings = headers.get_all('transfer-encoding')
    lengths = headers.get_all('content-length')
    if codings is not None:
        if lengths is not None:
            raise RequestRefused(BAD_REQUEST[0], 'Content-Length with Transfer-Encoding')
        if version != 'HTTP/1.1':
            raise RequestRefused(BAD_REQUEST[0], 'Transfer-Encoding in an %s request' % version)
        if len(codings) != 1 or codings[0].strip().lower() != 'chunked':
            raise RequestRefused(BAD_REQUEST[0], 'Transfer-Encoding other than chunked: %r'
                                 % ', '.join(codings))
    elif lengths is not None and (len(lengths) != 1 or not DIGITS.fullmatch(lengths[0].strip())):
        raise RequestRefused(BAD_REQUEST[0], 'Invalid Content-Length: %r' % ', '.join(lengths))


def read_header_lines(rfile, budget):
    """The header lines up to the blank line, within ``budget`` bytes in total."""
    lines = []
    while True:
        line = rfile.readline(budget + 1)
        if len(line) > budget:
            raise RequestRefused(HEADERS_TOO_LARGE, 'Request headers larger than maxHeaderSize')
        budget -= len(line)
        if line in (b'\r\n', b'\n'):
            return lines
        if not line.endswith(b'\n'):
            raise RequestRefused(BAD_REQUEST[0], 'Request headers ended early')
        if not HEADER_LINE.match(line):
            raise RequestRefused(BAD_REQUEST[0], 'Malformed header line %r' % line[:80])
        lines.append(line)


def valid_websocket_key(key):
    """True for a Sec-WebSocket-Key that is 16 bytes in base64."""
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def switching_protocols(key, extensions=None):
    """The complete 101 answer to an upgrade with ``key`` (``extensions``: the
    Sec-WebSocket-Extensions answer, or None)."""
    accept = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode('latin-1')).digest())
    return (b'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
            b'Sec-WebSocket-Accept: ' + accept + b'\r\n'
            + (b'' if extensions is None else b'Sec-WebSocket-Extensions: ' + extensions.encode() + b'\r\n')
            + b'\r\n')


def parse_upgrade_head(data, path, max_header_size):
    """The request items of a WSGI environ (``REQUEST_METHOD``, ``PATH_INFO``, ``HTTP_*``, ...)
    when ``data`` starts with a complete head that gsc upgrades without pywsgi: ``GET`` of
    ``path`` (no escapes) in HTTP/1.1, within ``max_header_size``, well-formed header
    lines, ``Upgrade: websocket``, ``Connection: upgrade``, a supported Sec-WebSocket-Version
    and a valid key, no body.  None for anything else, which pywsgi then serves (or refuses)
    exactly as it would have: this function never decides a refusal.

    Headers are merged as pywsgi does (:func:`merge_header_lines`).  The decoded head is kept
    as ``gsc.head``, from which :class:`~gsc.server.scserver.UpgradeRequest` reads its headers
    when someone asks for them.
    """
    end = data.find(HEAD_END)
    if end < 0 or end + len(HEAD_END) > max_header_size:
        return None
    text = data[:end].decode('latin-1')
    lines = text.split('\r\n')
    breaks = len(lines) - 1
    if text.count('\n') != breaks or text.count('\r') != breaks or not lines[0].isprintable():
        return None  # a bare CR or LF, a control character: pywsgi's reader decides
    request_line = lines[0].split(' ')
    if len(request_line) != 3 or request_line[0] != 'GET' or request_line[2] != 'HTTP/1.1':
        return None
    target, _, query = request_line[1].partition('?')
    if target != path:
        return None
    header_lines = lines[1:]
    for line in header_lines:
        if not HEADER_NAME.match(line):
            return None
    environ = {'REQUEST_METHOD': 'GET', 'SCRIPT_NAME': '', 'PATH_INFO': target,
               'QUERY_STRING': query, 'SERVER_PROTOCOL': 'HTTP/1.1', 'gsc.head': text}
    merge_header_lines(header_lines, environ_key, environ)
    return environ if _plain_upgrade(environ) else None


def environ_key(name):
    """The WSGI environ key of a header name (``Sec-WebSocket-Key`` -> ``HTTP_SEC_WEBSOCKET_KEY``)."""
    return 'HTTP_' + name.upper().replace('-', '_')


def merge_header_lines(lines, key, into):
    """Add the ``name: value`` ``lines`` to the dict ``into`` as pywsgi merges them, under
    ``key(name)``: names holding ``_`` dropped, values stripped, a repeated name's values
    joined with ``,`` (cookies with ``; ``); return ``into``."""
    cookie = key('Cookie')
    for line in lines:
        name, _, value = line.partition(':')
        if '_' in name:
            continue
        name = key(name)
        value = value.strip()
        if name in into:
            into[name] += ('; ' if name == cookie else ',') + value
        else:
            into[name] = value
    return into


def _plain_upgrade(environ):
    """The checks gevent-websocket and gsc make before a 101, all passed, and no body."""
    get = environ.get
    return (get('HTTP_UPGRADE', '').lower() == 'websocket'
            and 'upgrade' in get('HTTP_CONNECTION', '').lower()
            and get('HTTP_SEC_WEBSOCKET_VERSION') in SUPPORTED_VERSIONS
            and valid_websocket_key(get('HTTP_SEC_WEBSOCKET_KEY', '').strip())
            and 'HTTP_CONTENT_LENGTH' not in environ and 'HTTP_TRANSFER_ENCODING' not in environ
            and 'HTTP_CONTENT_TYPE' not in environ and 'HTTP_EXPECT' not in environ)


class PrefixedSocketIO(SocketIO):
    """A socket's raw reader that first returns ``prefix``: the bytes the lean upgrade reader
    read before it handed the connection to pywsgi."""

    def __init__(self, sock, prefix):
        super().__init__(sock, 'r')
        self._prefix = prefix

    def readinto(self, buffer):
        """The prefix (as much as fits), then the socket's bytes."""
        prefix = self._prefix
        if not prefix:
            return super().readinto(buffer)
        count = min(len(buffer), len(prefix))
        buffer[:count] = prefix[:count]
        self._prefix = prefix[count:]
        return count


def send_all(sock, data):
    """``sock.sendall(data)``, with one plain ``send`` when the kernel takes it all (the usual case)."""
    try:
        sent = sock._sock.send(data)
    except BlockingIOError:
        sent = 0
    if sent < len(data):
        sock.sendall(data[sent:])


def prefixed_reader(sock, prefix):
    """``sock.makefile('rb')`` that first reads ``prefix`` (its buffer holds all of it, so
    what a handler buffered past its request is the rest of the prefix, then the socket's)."""
    sock._io_refs += 1  # as makefile() does: the socket closes once its reader did too
    return io.BufferedReader(PrefixedSocketIO(sock, prefix), max(io.DEFAULT_BUFFER_SIZE, len(prefix)))


def default_max_connections():
    """maxConnections sized from the soft RLIMIT_NOFILE (None when unlimited), keeping
    a reserve of descriptors for the worker's own files and links."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(1, soft - max(FD_RESERVE_MIN, soft // 10))


class SCHandler(WebSocketHandler):
    """A pywsgi handler that routes each request to gsc or to the WSGI app."""

    headers_timer = None
    bytes_seen = False
    requests_started = 0
    counted = False
    first_headers_timeout = None
    """Seconds left of the first request's headersTimeout (the lean reader used the rest)."""

    def handle(self):
        """Serve the connection's requests, counted in ``server.http_connections``."""
        self.server.http_connections += 1
        self.counted = True
        try:
            super().handle()
        finally:
            self.uncount()

    def uncount(self):
        """Leave ``server.http_connections`` (at the end, or when gsc takes the socket over)."""
        if self.counted:
            self.counted = False
            self.server.http_connections -= 1

    def handle_one_request(self):
        """pywsgi's, with the request line and headers read within ``headersTimeout``:
        past it the connection closes, with a 408 when part of a request came."""
        try:
            return super().handle_one_request()
        except Timeout as exc:
            if exc is not self.headers_timer:
                raise
            log.debug('headersTimeout: closing the connection of %s', self.client_address)
            return ('408', REQUEST_TIMEOUT_RESPONSE) if self.bytes_seen else None
        finally:
            self.stop_headers_timer()

    def read_requestline(self):
        """The request line.  The headersTimeout of the first request runs from accept, that
        of a later one from its first byte (the wait for it is bounded by headersTimeout too)."""
        seconds = self.server.headers_timeout
        rfile = self.rfile
        self.requests_started += 1
        if self.requests_started > 1:
            self.bytes_seen = False
            with Timeout(seconds, False):
                self.bytes_seen = bool(rfile.peek(1))
            if not self.bytes_seen:
                return ''
            self.headers_timer = Timeout.start_new(seconds)
        else:
            self.headers_timer = Timeout.start_new(self.first_headers_timeout or seconds)
            self.bytes_seen = bool(rfile.peek(1))
        return rfile.readline(MAX_REQUEST_LINE).decode('latin-1')

    def read_request(self, raw_requestline):
        """pywsgi's parse, with a request line within maxHeaderSize (else 414); the headers
        are read by :meth:`MessageClass`.  Ends the headersTimeout."""
        try:
            if len(raw_requestline) > self.server.max_header_size:
                raise RequestRefused(URI_TOO_LONG, 'Request line longer than maxHeaderSize')
            return super().read_request(raw_requestline)
        finally:
            self.stop_headers_timer()

    def MessageClass(self, rfile, *_args):  # noqa: N802 (pywsgi's name)
        """The request's headers: within maxHeaderSize in total with the request line (431
        past it), well-formed lines only, and unambiguous framing (400 otherwise)."""
        budget = self.server.max_header_size - len(self.requestline)
        lines = read_header_lines(rfile, budget)
        headers = email.parser.Parser(_class=OldMessage).parsestr(b''.join(lines).decode('latin-1'))
        check_framing(headers, self.request_version)
        return headers

    def stop_headers_timer(self):
        """Cancel the headersTimeout (the headers are in, or the request is over)."""
        timer = self.headers_timer
        if timer is not None:
            timer.cancel()

    def _handle_client_error(self, ex):
        """A refused request gets its own answer (414, 431, 400); a connection that failed
        while its request was read closes quietly; other errors get pywsgi's 400."""
        if isinstance(ex, OSError):
            log.debug('connection of %s failed in its request: %s', self.client_address, ex)
            return None
        if not isinstance(ex, RequestRefused):
            return super()._handle_client_error(ex)
        self.log_error('Refused request (from %s): %s', self.client_address, ex)
        return (ex.code, ex.response)

    def run_application(self):
        """Route the request: a path of ``server.routes`` (health, metrics) to its handler, an
        upgrade at the realtime path to gsc, anything else to the app."""
        sc_server = self.server.sc_server
        environ = self.environ
        route = self.server.routes.get(environ.get('PATH_INFO'))
        if route is not None:
            return self.serve_route(route)
        if sc_server is None or environ.get('PATH_INFO') != sc_server.path:
            if sc_server is not None and is_upgrade(environ):
                return self.refuse(*BAD_REQUEST)
            return self.run_wsgi_app()
        if not is_upgrade(environ) or self.request_version != 'HTTP/1.1':
            return self.refuse(*(BAD_REQUEST if environ.get('HTTP_UPGRADE') else UPGRADE_REQUIRED))
        refusal = sc_server.verify_upgrade(environ)
        if refusal is not None:
            return self.refuse(*refusal)
        self.result = self.upgrade_websocket()
        if self.status is None or not self.status.startswith('101'):
            if self.status:
                self.process_result()
            else:
                self.refuse(*BAD_REQUEST)
            return None
        environ.pop('wsgi.input', None)
        self.uncount()
        sc_server.handle_upgraded(self)
        self.result = None
        return None

    def upgrade_connection(self):
        """Check the key and version, then write the 101 answer straight to the socket.

        gevent-websocket's own version would also build its WebSocket object, whose
        frames gsc does not use and whose finaliser costs every connection dearly.
        """
        version = self.environ.get('HTTP_SEC_WEBSOCKET_VERSION')
        if version not in SUPPORTED_VERSIONS:
            self.start_response('400 Bad Request',
                                [('Sec-WebSocket-Version', ', '.join(SUPPORTED_VERSIONS))])
            return [b'Unsupported WebSocket Version']
        key = self.environ.get('HTTP_SEC_WEBSOCKET_KEY', '').strip()
        if not valid_websocket_key(key):
            self.start_response('400 Bad Request', [])
            return [b'Invalid Sec-WebSocket-Key']
        answer, self.ws_extensions = self.server.sc_server.negotiate_extensions(self.environ)
        self.socket.sendall(switching_protocols(key, answer))
        self.status = '101 Switching Protocols'
        self.headers_sent = True
        self.close_connection = True
        return None

    def run_wsgi_app(self):
        """Serve the request with the WSGI app (501 in a server that has none).

        The environ carries ``gsc.exchange`` (publish from a view) and ``gsc.server``.
        """
        if self.server.application is None:
            return self.refuse(*NOT_IMPLEMENTED)
        sc_server = self.server.sc_server
        if sc_server is not None:
            self.environ['gsc.server'] = sc_server
            self.environ['gsc.exchange'] = sc_server.exchange
        return pywsgi.WSGIHandler.run_application(self)

    def serve_route(self, route):
        """Answer with ``route()``'s ``(status, headers, body)``; the connection stays open."""
        status, headers, body = route()
        self.start_response(status, headers + [('Content-Length', str(len(body)))])
        self.write(body)
        self.result = None

    def refuse(self, status, body):
        """Answer with ``status`` and a plain-text ``body``, then close the connection."""
        data = body.encode('utf-8')
        self.close_connection = True
        self.start_response(status, [('Content-Type', 'text/plain; charset=utf-8'),
                                     ('Content-Length', str(len(data))),
                                     ('Connection', 'close')])
        self.write(data)
        self.result = None

    def _log_error(self, t, v, tb):
        """A WSGI app that raises (also while streaming its body): a logged traceback and a
        500 for that request only.  pywsgi would hand it to the hub as an uncaught error,
        which a worker treats as fatal."""
        if not issubclass(t, GreenletExit):
            log.error('the WSGI app failed on %s %s', self.environ.get('REQUEST_METHOD'),
                      self.environ.get('PATH_INFO'), exc_info=(t, v, tb))

    def log_request(self):
        """The access log line (when ``log`` is set), not for upgrades."""
        if self.server.log is not None and not str(self.status).startswith('101'):
            pywsgi.WSGIHandler.log_request(self)


class ConnectionGreenlet(Greenlet):
    """The greenlet of one accepted connection: a :class:`gevent.Greenlet` that does not
    record the stack that spawned it (always the accept loop's; ~8 us per connection)."""

    spawning_stack_limit = 0


class HTTPServer(pywsgi.WSGIServer):
    """A gevent WSGI server that also serves an :class:`gsc.server.SCServer`.

    ``listener`` is ``(host, port)`` or a bound socket; ``app`` the WSGI application
    served beside the realtime path (None: plain requests get 501).  ``sc_server``
    is set by :func:`gsc.server.attach`, which also applies the limits of its options
    (:meth:`set_limits`).  Access logging is off unless ``log`` is given.
    ``http_connections`` counts the connections a pywsgi handler serves.  ``routes`` maps
    a path to a handler answering ``(status, headers, body)`` before the realtime path and
    the app are considered (the health and metrics paths of :mod:`gsc.cluster.metrics`).
    """

    handler_class = SCHandler
    _resume_timer = None

    def __init__(self, listener, app=None, log=None, **kwargs):
        kwargs.setdefault('error_log', LoggingLogAdapter(logging.getLogger('gsc.server.http.error')))
        kwargs.setdefault('spawn', ConnectionGreenlet.spawn)
        super().__init__(listener, app, log=log, **kwargs)
        self.application = app
        self.access_log = log
        self.sc_server = None
        self.routes = {}
        self.http_connections = 0
        self.headers_timeout = self.max_header_size = self.max_connections = None
        self.set_limits(defaults(SERVER))
        self._accept_pause = ACCEPT_BACKOFF[0]
        self._overloads = WarningDigest(_log_warning)  # ``log`` here is the access log

    def set_wsgi_app(self, app):
        """Serve ``app`` for every request that is not a realtime upgrade."""
        self.application = app

    def set_limits(self, options):
        """Apply ``headersTimeout``, ``maxHeaderSize`` and ``maxConnections`` (None: sized
        from the fd limit) of the server ``options``."""
        self.headers_timeout = options['headersTimeout'] / 1000.0
        self.max_header_size = options['maxHeaderSize']
        self.max_connections = options['maxConnections'] or default_max_connections()

    def connection_count(self):
        """Connections served now: HTTP ones and upgraded WebSockets."""
        upgraded = self.sc_server.ws_connections if self.sc_server is not None else 0
        return self.http_connections + upgraded

    def do_handle(self, sock, address):
        """Serve an accepted connection in its own greenlet."""
        spawn = self._spawn
        if spawn is None:
            self.serve_connection(sock, address)
        else:
            spawn(self.serve_connection, sock, address)

    def serve_connection(self, sock, address):
        """Serve a connection, then close it; unless gsc took it over: :meth:`handle` then
        returned the function that serves it, called here, once the frames that read the
        request (its bytes, its dicts) are gone, so that they do not live as long as the
        reader."""
        try:
            serve = self._handle(sock, address)
        except BaseException:
            sock.close()
            raise
        if serve is None:
            sock.close()
        else:
            serve()

    def handle(self, sock, address):
        """Serve one connection (503 past maxConnections); a socket error ends only it.
        None, or the function that serves a connection the lean upgrade reader upgraded."""
        if self.max_connections is not None and self.connection_count() >= self.max_connections:
            self.refuse_connection(sock)
            return None
        try:
            if self.access_log is not None or self.sc_server is None or type(sock) is not GeventSocket:
                super().handle(sock, address)
                return None
            return self.read_upgrade(sock, address)
        except OSError as exc:
            log.debug('connection of %s ended: %s', address, exc)
            return None

    def read_upgrade(self, sock, address):
        """The lean upgrade reader: read what came (within headersTimeout), answer an upgrade
        at the realtime path with the 101 and return gsc's function that serves it; hand
        anything else, with the bytes read, to the pywsgi handler (with what is left of
        headersTimeout).  The connection counts in ``http_connections`` until gsc counts it."""
        started = time.monotonic()
        sc_server = self.sc_server
        request = None
        self.http_connections += 1
        try:
            data = self.read_head(sock)
            if data and sc_server.lean_path is not None and sc_server.lean_path not in self.routes:
                request = parse_upgrade_head(data, sc_server.lean_path, self.max_header_size)
            if request is not None:
                accepted, extensions = self.answer_upgrade(sock, address, request)
        finally:
            self.http_connections -= 1
        if request is not None:
            if not accepted:
                return None
            return sc_server.take_upgraded(sock, request, data[data.find(HEAD_END) + len(HEAD_END):],
                                           extensions)
        if data:
            handler = self.handler_class(sock, address, self, prefixed_reader(sock, data))
            handler.first_headers_timeout = max(self.headers_timeout - (time.monotonic() - started), 0.001)
            handler.handle()
        return None

    def read_head(self, sock):
        """The first bytes of a connection (one ``recv``, up to maxHeaderSize), b'' when nothing
        came within headersTimeout or the connection failed."""
        try:
            try:
                return sock._sock.recv(self.max_header_size)  # non-blocking: often already there
            except BlockingIOError:
                pass
            sock.settimeout(self.headers_timeout)
            try:
                return sock.recv(self.max_header_size)
            finally:
                sock.settimeout(None)
        except (OSError, stdlib_socket.timeout) as exc:
            log.debug('connection ended before its request: %s', exc or 'headersTimeout')
            return b''

    def answer_upgrade(self, sock, address, request):
        """Refuse an upgrade (origin, handshakeWS middleware) or answer the 101: ``(accepted,
        negotiated extensions)``.  ``request``: the request's environ items (completed here)."""
        sc_server = self.sc_server
        request['REMOTE_ADDR'], request['REMOTE_PORT'] = str(address[0]), str(address[1])
        environ = self.get_environ()  # the whole WSGI environ, as the handshakeWS middleware sees it
        environ.update(request)
        refusal = sc_server.verify_upgrade(environ)
        if refusal is not None:
            status, body = refusal
            sock.sendall(_close_response(status, body.encode('utf-8')))
            return False, None
        answer, extensions = sc_server.negotiate_extensions(request)
        send_all(sock, switching_protocols(request['HTTP_SEC_WEBSOCKET_KEY'], answer))
        return True, extensions

    def refuse_connection(self, sock):
        """Answer 503 with ``Connection: close`` and close once the client did (or soon)."""
        self.warn_overload('maxConnections', 'maxConnections (%s) reached: refusing new '
                           'connections with 503' % self.max_connections)
        with Timeout(min(REFUSAL_LINGER, self.headers_timeout), False):
            try:
                sock.sendall(SERVICE_UNAVAILABLE_RESPONSE)
                sock.shutdown(stdlib_socket.SHUT_WR)
                drained = 0
                while drained < REFUSAL_DRAIN_BYTES:
                    data = sock.recv(16384)
                    if not data:
                        break
                    drained += len(data)
            except (OSError, ValueError):
                pass

    def wrap_socket_and_handle(self, client_socket, address):
        """TLS: the handshake completes within headersTimeout, and a failed one ends only
        its connection (gevent would report it to the hub, which ends a worker)."""
        try:
            with Timeout(self.headers_timeout):
                ssl_socket = self.wrap_socket(client_socket, **self.ssl_args)
        except (OSError, ValueError, Timeout) as exc:
            log.debug('TLS handshake with %s failed: %s', address, exc or 'headersTimeout')
            return None
        try:
            return self.handle(ssl_socket, address)
        finally:
            ssl_socket.close()

    def do_read(self):
        """Accept a connection; out of file descriptors, pause the accept loop (backing
        off up to a second) instead of letting the error reach the hub."""
        try:
            accepted = super().do_read()
        except OSError as exc:
            if exc.errno in ACCEPT_ERRORS_OF_ONE_PEER:
                return None
            if exc.errno not in ACCEPT_ERRORS_OF_RESOURCES:
                raise
            self.pause_accepting(exc)
            return None
        if accepted:
            self._accept_pause = ACCEPT_BACKOFF[0]
        return accepted

    def pause_accepting(self, exc):
        """Stop accepting for a while after ``exc`` (EMFILE, ...); the pause doubles while it lasts."""
        pause = self._accept_pause
        self._accept_pause = min(ACCEPT_BACKOFF[1], pause * 2)
        self.warn_overload('acceptPaused', 'accept failed (%s) with %d connections open: pausing '
                           'the accept loop for %.2fs'
                           % (exc.strerror or exc, self.connection_count(), pause))
        self.stop_accepting()
        self._resume_timer = self.loop.timer(pause)
        self._resume_timer.start(self._resume_accepting)

    def _resume_accepting(self):
        self._resume_timer.close()
        self._resume_timer = None
        if self.started:
            self.start_accepting()

    def stop_accepting(self):
        """Stop accepting (also the resumption of a pause)."""
        if self._resume_timer is not None:
            self._resume_timer.close()
            self._resume_timer = None
        super().stop_accepting()

    def warn_overload(self, kind, message):
        """Log ``message``: the first of its ``kind`` at once, then one summary per 10 s while
        they go on (:class:`gsc.reporting.WarningDigest`)."""
        self._overloads.add(SCError(message, name=kind))
