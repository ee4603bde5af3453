"""SCServer: the realtime server of one worker (socketcluster-server in Python).

It owns the sockets of a worker (``clients``, ``pending_clients``), the middleware
chains, the auth engine and the exchange.  :func:`attach` binds it to a
:class:`gsc.server.http.HTTPServer`; :func:`listen` also creates and starts that server.
"""

import base64
import logging
import os
import socket as stdlib_socket
from functools import partial
from urllib.parse import urlsplit

import gevent
from gevent.event import AsyncResult
from gevent.socket import socket as GeventSocket
from websockets.exceptions import InvalidHeader, NegotiationError
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.headers import build_extension, parse_extension

from ..core import codec as default_codec
from .auth import AuthEngine, generate_auth_key
from ..core.emitter import EventEmitter
from ..engines import create_engine
from ..core.history import HistoryRules
from ..errors import CloseCode, InvalidOptionsError, ServerProtocolError
from .exchange import Exchange
from ..core.upgrade import merge_header_lines
from .http import HTTPServer
from ..core.middleware import (MIDDLEWARE_AUTHENTICATE, MIDDLEWARE_HANDSHAKE_SC, MIDDLEWARE_HANDSHAKE_WS,
                         MiddlewareChains, MiddlewareTypes, Request)
from ..core.presence import PresenceRules
from ..core.ratelimit import RateLimiter
from ..reporting import WarningDigest
from ..core.options import DEFLATE_OPTIONS, normalise_server_options
from .socket import ServerSocket
from ..transport import IdleReaders, WebSocketTransport

log = logging.getLogger(__name__)


class UpgradeRequest(Request):
    """The HTTP upgrade request as gsc code sees it (``socket.request``, handshakeWS ``req``):
    ``method``, ``url``, ``path``, ``query``, ``headers`` (lower-case names),
    ``remote_address``, ``remote_port``, ``remote_family``, ``forwarded_for_address``,
    ``exchange``; the WSGI ``environ`` too in the handshakeWS middleware.  Any of them may be
    set, other attributes added.

    One per connection, kept as long as it lives: its fields are slots, and an upgrade read by
    gsc's lean reader keeps its head as one string, parsed into ``headers`` on first use
    (docs/idle-memory.md)."""

    __slots__ = ('method', 'url', 'path', 'query', 'remote_address', 'remote_port',
                 'remote_family', 'forwarded_for_address', 'exchange', '_head', '_headers')

    def __init__(self, environ, exchange, keep_environ=False):  # no Request.__init__: slots
        self.method = environ.get('REQUEST_METHOD')
        self.path = path = environ.get('PATH_INFO', '/')
        self.query = query = environ.get('QUERY_STRING') or ''
        self.url = path + '?' + query if query else path
        self.remote_address = address = environ.get('REMOTE_ADDR')
        self.remote_port = _int(environ.get('REMOTE_PORT'))
        self.remote_family = 'IPv6' if address and ':' in address else 'IPv4'
        forwarded = environ.get('HTTP_X_FORWARDED_FOR')
        self.forwarded_for_address = forwarded.split(',')[0] if forwarded else None
        self.exchange = exchange
        self._head = environ.get('gsc.head')
        self._headers = None if self._head is not None else {
            key[5:].replace('_', '-').lower(): value
            for key, value in environ.items() if key.startswith('HTTP_')}
        if keep_environ:
            self.environ = environ

    @property
    def headers(self):
        """The request's headers by lower-case name (merged as pywsgi merges them)."""
        if self._headers is None:
            self._headers = merge_header_lines(self._head.split('\r\n')[1:], str.lower, {})
            self._head = None
        return self._headers

    @headers.setter
    def headers(self, headers):
        self._headers, self._head = headers, None

    def __repr__(self):
        return 'UpgradeRequest(%s %s)' % (self.method, self.url)


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class SCServer(EventEmitter, MiddlewareTypes):
    """The SocketCluster server of a worker.

    Attributes: ``options`` (normalised, camelCase), ``path``, ``clients`` and
    ``pending_clients`` (id -> :class:`ServerSocket`), ``exchange``, ``auth``, ``codec``,
    ``signature_key``/``verification_key`` (mutable at run time), ``is_ready``,
    ``http_server`` (set by :func:`attach`), ``messages_received`` (inbound messages, all sockets),
    ``ws_connections`` (upgraded connections being served, counted against maxConnections);
    the counters of :mod:`gsc.cluster.metrics`: ``messages_sent``, ``handshakes``, ``publishes``,
    ``subscribes``, ``ack_timeouts``, ``slow_consumer_closes`` (the engine's links report
    themselves: ``exchange.engine.link_states()``).
    """

    def __init__(self, options=None, engine=None):
        EventEmitter.__init__(self)
        self.options = opts = normalise_server_options(options)
        self.path = opts['path']
        # what the lean upgrade reader of gsc.server.http compares a request's path with (None:
        # every upgrade goes through pywsgi, which unescapes the path)
        self.lean_path = None if '%' in self.path else self.path
        self.ack_timeout = opts['ackTimeout']
        self.handshake_timeout = opts['handshakeTimeout']
        self.ping_interval = opts['pingInterval']
        self.ping_timeout = opts['pingTimeout']
        self.ping_timeout_disabled = opts['pingTimeoutDisabled']
        self.allow_client_publish = opts['allowClientPublish']
        self.socket_channel_limit = opts['socketChannelLimit']
        self.pub_sub_batch_duration = opts['pubSubBatchDuration']
        self.strict_handshake = opts['strictHandshake']
        self.max_payload = opts['maxPayload']
        self.app_name = opts['appName']
        self.origins = opts['origins']
        self.unheard_warnings = WarningDigest(partial(log.warning, '%s'))
        self.middleware = MiddlewareChains(self.emit_warning, opts['middlewareEmitWarnings'])
        self.deflate = _deflate_factory(opts['perMessageDeflate'])
        self.auth = opts['authEngine'] or AuthEngine()
        self.codec = opts['codecEngine'] or default_codec
        self._configure_keys(opts)
        self.clients = {}
        self.pending_clients = {}
        self.http_server = None
        self.messages_received = 0
        self.ws_connections = 0
        self.messages_sent = self.handshakes = self.publishes = self.subscribes = 0
        self.ack_timeouts = self.slow_consumer_closes = 0
        self.rate_limited = 0
        self._idle_readers = IdleReaders()
        self._id_counter = 0
        # the rules the worker already compiled for its engine (Redis), else from the options
        presence_rules = getattr(engine, 'presence_rules', None) or PresenceRules.from_options(opts)
        self.exchange = Exchange(self, engine or create_engine(
            opts['brokerEngine'], opts['brokerEngineOptions'], self.emit_warning,
            history_rules=HistoryRules.from_options(opts),
            presence_rules=presence_rules), presence_rules)
        self.is_ready = False
        self.exchange.start(self._on_engine_ready)

    # -- configuration -----------------------------------------------------------

    @property
    def middleware_emit_warnings(self):
        """Whether non-silent middleware errors become ``warning`` events."""
        return self.middleware.emit_warnings

    def _configure_keys(self, opts):
        private_key, public_key = opts['authPrivateKey'], opts['authPublicKey']
        if private_key or public_key:
            if not private_key:
                raise InvalidOptionsError('The authPrivateKey option must be specified if '
                                          'authPublicKey is specified')
            if not public_key:
                raise InvalidOptionsError('The authPublicKey option must be specified if '
                                          'authPrivateKey is specified')
            self.signature_key, self.verification_key = private_key, public_key
        else:
            key = opts['authKey'] or generate_auth_key()
            opts['authKey'] = key
            self.signature_key = self.verification_key = key
        self.default_sign_options = {'expiresIn': opts['authDefaultExpiry']}
        if opts['authAlgorithm']:
            self.default_sign_options['algorithm'] = opts['authAlgorithm']
        algorithms = opts['authVerifyAlgorithms'] or (
            [opts['authAlgorithm']] if opts['authAlgorithm'] else None)
        self.default_verify_options = {'algorithms': algorithms} if algorithms else {}

    def handshake_may_wait(self):
        """True when a ``#handshake`` may take time: handshake or authenticate middleware,
        or an auth engine other than gsc's own (which verifies in microseconds)."""
        middleware = self.middleware
        return (middleware.has(MIDDLEWARE_HANDSHAKE_SC) or middleware.has(MIDDLEWARE_AUTHENTICATE)
                or type(self.auth) is not AuthEngine)

    def verify_options(self, socket):
        """The options given to ``auth.verify_token`` for ``socket``."""
        options = dict(self.default_verify_options)
        options['socket'] = socket
        return options

    def set_auth_engine(self, engine):
        """Use ``engine`` (``sign_token_with_payload``/``verify_token``) from now on."""
        self.auth = engine

    def set_codec_engine(self, codec):
        """Use ``codec`` (``encode``/``decode``) from now on."""
        self.codec = codec

    def add_middleware(self, type_, fn):
        """Append ``fn(req, next)`` (or ``fn(req)``) to the ``type_`` chain."""
        self.middleware.add(type_, fn)

    def remove_middleware(self, type_, fn):
        """Remove ``fn`` from the ``type_`` chain."""
        self.middleware.remove(type_, fn)

    def get_path(self):
        """The normalised realtime path."""
        return self.path

    # -- the registry of sockets -------------------------------------------------

    @property
    def clients_count(self):
        """Sockets that completed the handshake."""
        return len(self.clients)

    @property
    def pending_clients_count(self):
        """Sockets still waiting for their handshake."""
        return len(self.pending_clients)

    def rate_limiter(self, now):
        """A new socket's :class:`~gsc.core.ratelimit.RateLimiter` (None when both
        ``inboundMessagesPerSecond`` and ``inboundBytesPerSecond`` are off)."""
        options = self.options
        messages, size = options['inboundMessagesPerSecond'], options['inboundBytesPerSecond']
        if messages is None and size is None:
            return None
        return RateLimiter(messages, size, options['rateLimitGrace'] / 1000.0, now)

    def generate_id(self):
        """A 20-character URL-safe id: 12 random bytes and a 24-bit sequence number."""
        self._id_counter = (self._id_counter + 1) & 0xFFFFFF
        raw = os.urandom(12) + self._id_counter.to_bytes(3, 'big')
        return base64.urlsafe_b64encode(raw).decode('ascii')

    def promote_socket(self, socket):
        """Move ``socket`` from ``pending_clients`` to ``clients`` (its handshake completed)."""
        self.pending_clients.pop(socket.id, None)
        self.clients[socket.id] = socket

    def remove_socket(self, socket):
        """Forget ``socket`` (it closed)."""
        self.pending_clients.pop(socket.id, None)
        self.clients.pop(socket.id, None)

    # -- upgrades ----------------------------------------------------------------

    def verify_upgrade(self, environ):
        """None to accept an upgrade, or ``(status, body)`` to refuse it (403 origin, 401 middleware)."""
        origin = environ.get('HTTP_ORIGIN') or environ.get('HTTP_SEC_WEBSOCKET_ORIGIN')
        if not self.origin_allowed(origin):
            err = ServerProtocolError('Failed to authorize socket handshake - Invalid origin: %s' % origin)
            self.emit_warning(err)
            return '403 Forbidden', err.message
        if not self.middleware.has(MIDDLEWARE_HANDSHAKE_WS):
            return None
        waiter = AsyncResult()
        req = UpgradeRequest(environ, self.exchange, keep_environ=True)
        self.middleware.run(MIDDLEWARE_HANDSHAKE_WS, req, lambda err, _extra: waiter.set(err))
        err = waiter.get()
        if err:
            return '401 Unauthorized', getattr(err, 'message', None) or str(err)
        return None

    def negotiate_extensions(self, environ):
        """``(Sec-WebSocket-Extensions answer, [extension])`` for an upgrade: permessage-deflate
        when the option is on and the client offers it; ``(None, None)`` otherwise."""
        offer = environ.get('HTTP_SEC_WEBSOCKET_EXTENSIONS')
        if self.deflate is None or not offer:
            return None, None
        try:
            offers = parse_extension(offer)
        except InvalidHeader:
            return None, None
        for name, params in offers:
            if name != self.deflate.name:
                continue
            try:
                answer, extension = self.deflate.process_request_params(params, [])
            except NegotiationError:
                continue
            return build_extension([(name, answer)]), [extension]
        return None, None

    def origin_allowed(self, origin):
        """The ``origins`` check of docs/protocol.md, Connecting (exact elements; no substring matching)."""
        origins = self.origins
        if '*:*' in origins:
            return True
        if not origin or origin == 'null':
            origin = '*'
        try:
            parts = urlsplit(origin)
            hostname = parts.hostname or origin
            port = parts.port or (443 if parts.scheme in ('https', 'wss') else 80)
        except ValueError:
            return False
        return ('%s:%s' % (hostname, port) in origins or '%s:*' % hostname in origins
                or '*:%s' % port in origins)

    def handle_upgraded(self, handler):
        """Take over a connection that a pywsgi handler upgraded.

        A plain TCP socket is detached and served by a fresh greenlet, so the handler (its
        environ, header objects and read buffer) is freed at once: an idle connection keeps
        only what gsc needs, and no greenlet once idle.  A TLS socket keeps its handler's
        greenlet.
        """
        sock = handler.socket
        request = self._take_upgraded(sock, handler.environ)
        initial = _buffered_bytes(handler.rfile, sock)
        extensions = getattr(handler, 'ws_extensions', None)
        if hasattr(sock, '_sslobj'):
            self._serve(sock, request, initial, extensions)
            return
        own = GeventSocket(sock.family, sock.type, fileno=sock.detach())
        gevent.spawn(self._serve, own, request, initial, extensions)

    def take_upgraded(self, sock, environ, initial=b'', extensions=None):
        """Take over a connection that was answered with the 101 (``environ``: its request's
        items; ``initial``: bytes read past the request; ``extensions``: those negotiated):
        the function that serves it in the caller's greenlet, until it ends or goes idle.
        Call it from a frame that holds nothing else of the request, which would otherwise
        live as long as the reader."""
        return partial(self._serve, sock, self._take_upgraded(sock, environ), initial, extensions)

    def _take_upgraded(self, sock, environ):
        """Count an upgraded connection in ``ws_connections``, with TCP_NODELAY: its UpgradeRequest."""
        try:
            sock.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, 1)
        except OSError:
            pass
        request = UpgradeRequest(environ, self.exchange)
        self.ws_connections += 1
        return request

    def _serve(self, sock, request, initial, extensions):
        """Serve one upgraded connection: its reader runs here until it ends or goes idle
        (a plain connection's reader then ends, and a new one starts on input)."""
        try:
            transport = WebSocketTransport(
                sock, None, None, max_payload=self.max_payload,
                max_outbound=self.options['maxOutboundBytes'], initial=initial,
                extensions=extensions, idle_readers=self._idle_readers,
                on_end=self._connection_ended,
                pong_timeout=None if self.ping_timeout_disabled else self.ping_timeout / 1000.0)
            socket = ServerSocket(self.generate_id(), self, transport, request)
            transport.on_message = socket.handle_frame
            transport.on_close = socket.handle_close
        except BaseException:
            self.ws_connections -= 1
            raise
        self.pending_clients[socket.id] = socket
        self.emit('handshake', socket)
        self.emit('_handshake', socket)
        socket.start_timers()
        transport.run()

    def _connection_ended(self):
        self.ws_connections -= 1

    # -- events ------------------------------------------------------------------

    def _on_engine_ready(self):
        self.is_ready = True
        self.emit('ready')

    def emit_warning(self, warning):
        """The server ``warning`` event; when nobody listens, the warning is logged with the
        first of its kind at once, then one summary per kind per 10 s (clients cause
        warnings at will: see :mod:`gsc.reporting`)."""
        if not self.emit('warning', warning):
            self.unheard_warnings.add(warning)

    def close(self):
        """Stop accepting upgrades and disconnect every socket (1001)."""
        self.is_ready = False
        for socket in list(self.clients.values()) + list(self.pending_clients.values()):
            socket.disconnect(CloseCode.GOING_AWAY)
        self.exchange.close()


def _deflate_factory(option):
    """websockets' permessage-deflate factory for the ``perMessageDeflate`` option (None: off)."""
    if not option:
        return None
    settings = option if isinstance(option, dict) else {}
    return ServerPerMessageDeflateFactory(
        **{DEFLATE_OPTIONS[key]: value for key, value in settings.items()})


def _buffered_bytes(rfile, sock):
    """What pywsgi's reader already holds past the upgrade request (a client may send
    frames without waiting for the 101); the transport then reads the socket directly,
    so an idle connection keeps no read buffer."""
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        data = rfile.peek()
    except OSError:
        data = b''
    finally:
        sock.settimeout(timeout)
    return rfile.read(len(data)) if data else b''


def attach(http_server, options=None, engine=None):
    """An :class:`SCServer` serving the realtime path of ``http_server``."""
    sc_server = SCServer(options, engine)
    sc_server.http_server = http_server
    http_server.sc_server = sc_server
    http_server.set_limits(sc_server.options)
    return sc_server


def listen(port, options=None, host='127.0.0.1', engine=None, app=None, **ssl_kwargs):
    """A started standalone server on ``host:port`` (port 0 picks a free one: see ``sc_server.port``)."""
    http_server = HTTPServer((host, port), app, **ssl_kwargs)
    sc_server = attach(http_server, options, engine)
    http_server.start()
    sc_server.port = http_server.server_port
    return sc_server

