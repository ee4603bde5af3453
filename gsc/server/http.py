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

import email.parser
import errno
import io
import logging
import resource
import socket as stdlib_socket
import time

from gevent import Greenlet, GreenletExit, Timeout, pywsgi
from gevent.pywsgi import MAX_REQUEST_LINE, LoggingLogAdapter, OldMessage
from gevent.socket import SocketIO, socket as GeventSocket
from geventwebsocket.handler import WebSocketHandler

from ..core.upgrade import (BAD_REQUEST, HEAD_END, NOT_IMPLEMENTED, REQUEST_TIMEOUT_RESPONSE,
                            SERVICE_UNAVAILABLE_RESPONSE, SUPPORTED_VERSIONS, UPGRADE_REQUIRED,
                            URI_TOO_LONG, RequestRefused, check_framing, close_response, is_upgrade,
                            parse_upgrade_head, read_header_lines,
                            switching_protocols, valid_websocket_key)
from ..errors import SCError
from ..gevent_internals import count_file_object, raw_socket
from ..reporting import WarningDigest
from ..core.options import SERVER, defaults

log = logging.getLogger(__name__)

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
        sent = raw_socket(sock).send(data)
    except BlockingIOError:
        sent = 0
    if sent < len(data):
        sock.sendall(data[sent:])


def prefixed_reader(sock, prefix):
    """``sock.makefile('rb')`` that first reads ``prefix`` (its buffer holds all of it, so
    what a handler buffered past its request is the rest of the prefix, then the socket's)."""
    count_file_object(sock)
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

    def _handle_client_error(self, ex):  # pywsgi's private hook: gsc.gevent_internals
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
                return raw_socket(sock).recv(self.max_header_size)  # often already there
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
            sock.sendall(close_response(status, body.encode('utf-8')))
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
