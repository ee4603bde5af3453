"""ServerSocket: one client connection, speaking the SocketCluster protocol.

It never touches a socket itself: frames come in through :meth:`ServerSocket.handle_frame`
and leave through ``transport.send``; the transport also closes.  So a unit test can
drive a ServerSocket with a fake transport.  Timers are libev watchers of the hub,
never a greenlet per ping.
"""

import logging
from collections import deque

import gevent
from gevent import get_hub

from ..core import protocol
from ..errors import (BadConnectionError, CloseCode, InvalidActionError, InvalidArgumentsError,
                      RateLimitError, TimeoutError, close_error, dehydrate, hydrate, public_error)
from .auth import AuthEngine
from ..core.emitter import EventEmitter
from .exchange import HistoryFrame
from ..core.middleware import MIDDLEWARE_EMIT, MIDDLEWARE_HANDSHAKE_SC, Request
from ..core.protocol import (AUTHENTICATED, CLOSED, CONNECTING, OPEN, UNAUTHENTICATED, UNDEFINED,
                             BatchTooLarge, CallTable, Event, Ping, Pong, Raw, Responder, Response,
                             event_packet, none_if_undefined, parse_frame, transition)
from ..transport import yield_to_loop
from .socket_auth import SocketAuth
from .socket_pubsub import SocketPubSub

log = logging.getLogger(__name__)

# Event names that only exist on the server socket itself: inbound packets with these
# names are ignored, and emit() refuses to send them (except 'error', emitted locally).
LOCAL_EVENTS = frozenset((
    'subscribe', 'unsubscribe', 'connect', '_connect', 'disconnect', '_disconnect',
    'connectAbort', '_connectAbort', 'close', '_close', 'message', 'error',
    'authStateChange', 'authTokenSigned', 'authenticate', 'deauthenticate', 'badAuthToken',
    'raw'))

# What a closing socket reports, by the state it was in (docs/protocol.md, Closing).
CLOSE_EVENTS = {OPEN: ('disconnection', 'disconnect'), CONNECTING: ('connectionAbort', 'connectAbort')}

VALID_CLOSE_CODES = frozenset(range(1000, 1004)) | frozenset(range(1007, 1012)) | \
    frozenset(range(3000, 5000))

# Packets handled between two yields to the hub while one frame (a batch) or the packets
# that waited for the handshake are handled: other connections are served meanwhile.
YIELD_EVERY = 32
# What the frames that wait for the handshake may add up to when maxPayload is off.
DEFAULT_WAITING_BYTES = 1024 * 1024
def _aborted(event):
    """The error of a call to the client that its connection's end cut short."""
    return BadConnectionError("Event '%s' was aborted due to a bad connection" % event,
                              type='disconnect')


class ServerSocket(SocketAuth, SocketPubSub, EventEmitter):
    """The server side of one client connection (socketcluster-server's SCServerSocket).

    Attributes: ``id``, ``server``, ``state`` (connecting/open/closed), ``auth_state``,
    ``auth_token`` (decoded payload), ``signed_auth_token``, ``active``, ``request``
    (the upgrade request), ``remote_address``, ``remote_port``, ``remote_family``,
    ``forwarded_for_address``, ``exchange``, ``channel_subscriptions`` (dict name -> True).
    """

    CONNECTING = CONNECTING
    OPEN = OPEN
    CLOSED = CLOSED
    AUTHENTICATED = AUTHENTICATED
    UNAUTHENTICATED = UNAUTHENTICATED

    def __init__(self, socket_id, server, transport, request=None):
        EventEmitter.__init__(self)
        self.id = socket_id
        self.server = server
        self.socket = transport
        self.request = request
        self.remote_address = getattr(request, 'remote_address', None)
        self.remote_port = getattr(request, 'remote_port', None)
        self.remote_family = getattr(request, 'remote_family', None)
        self.forwarded_for_address = getattr(request, 'forwarded_for_address', None)
        self.exchange = server.exchange
        self.state = CONNECTING
        self.auth_state = UNAUTHENTICATED
        self.auth_token = None
        self.signed_auth_token = None
        self.active = True
        self.channel_subscriptions = {}
        self._history_gates = None  # channel -> RecoveryGate, for channels subscribed with recovery
        self._recoveries = 0  # history reads in flight
        self._calls = CallTable()
        self._handshake_started = False
        self._token_expiry = None
        self._batch = None
        self._waiting = None  # packets that arrived while the handshake is in progress
        self._waiting_bytes = 0
        self._loop = get_hub().loop
        self._last_received = self._loop.now()
        self._handshake_timer = None
        self._tick_timer = None
        self._next_ping = 0.0
        self._limiter = server.rate_limiter(self._last_received)

    # -- properties --------------------------------------------------------------

    @property
    def channel_subscriptions_count(self):
        """How many channels the socket is subscribed to."""
        return len(self.channel_subscriptions)

    def get_state(self):
        """``state``."""
        return self.state

    def get_auth_token(self):
        """The decoded auth token, or None."""
        return self.auth_token

    def get_bytes_received(self):
        """Bytes received on this connection so far."""
        return self.socket.bytes_received

    @property
    def _verbose_errors(self):
        """True in the ``dev`` environment: a handler's unexpected error keeps its message."""
        return self.server.options.get('environment') == 'dev'

    def _channel_too_long(self, channel):
        """True for a channel name longer than maxChannelNameLength."""
        return isinstance(channel, str) and len(channel) > self.server.options['maxChannelNameLength']

    def subscriptions(self):
        """The names of the channels the socket is subscribed to."""
        return list(self.channel_subscriptions)

    def is_subscribed(self, channel):
        """True when the socket is subscribed to ``channel``."""
        return channel in self.channel_subscriptions

    # -- timers ------------------------------------------------------------------

    def start_timers(self):
        """Arm the handshake timeout and the ping/pong timer (called once the socket exists)."""
        server = self.server
        self._handshake_timer = self._loop.timer(server.handshake_timeout / 1000.0)
        self._handshake_timer.start(self._on_handshake_timeout)
        if not server.ping_timeout_disabled:
            self._next_ping = self._loop.now() + server.ping_interval / 1000.0
            self._arm_tick()

    def _arm_tick(self):
        now = self._loop.now()
        pong_deadline = self._last_received + self.server.ping_timeout / 1000.0
        delay = max(min(self._next_ping, pong_deadline) - now, 0.001)
        self._tick_timer = self._loop.timer(delay)
        self._tick_timer.start(self._on_tick)

    def _on_tick(self):
        if self.state == CLOSED:
            return
        now = self._loop.now()
        if now - self._last_received >= self.server.ping_timeout / 1000.0:
            gevent.spawn(self._close_unanswered_ping)
            return
        if now >= self._next_ping:
            self.socket.send(protocol.PING)
            self._next_ping = now + self.server.ping_interval / 1000.0
        self._arm_tick()

    def _close_unanswered_ping(self):
        if self.state != CLOSED:
            self._on_sc_close(CloseCode.CLIENT_PONG_TIMEOUT)
            self.socket.close(CloseCode.CLIENT_PONG_TIMEOUT)

    def _on_handshake_timeout(self):
        gevent.spawn(self.disconnect, CloseCode.HANDSHAKE_TIMEOUT)

    def _stop_timers(self):
        for timer in (self._handshake_timer, self._tick_timer):
            if timer is not None:
                timer.close()
        self._handshake_timer = self._tick_timer = None
        if self._batch is not None:
            self._batch[1].close()
            self._batch = None
        self._waiting = None

    # -- inbound -----------------------------------------------------------------

    def handle_frame(self, frame):
        """Process one inbound message (text or binary payload) of the WebSocket.

        Any exception while handling it closes the connection with 1011: no packet can
        leave a connection open and unserved.
        """
        try:
            self._receive(frame)
        except Exception:
            self._close_on_failure()

    def handle_close(self, code, reason):
        """The WebSocket ended (``code`` from the peer's close frame, 1006 without one)."""
        if self.socket.overflowed:
            self.server.slow_consumer_closes += 1
        if self.state != CLOSED:
            try:
                self._on_sc_close(code, reason)
            except Exception:
                log.exception('socket %s failed to run its close sequence', self.id)

    def _receive(self, frame):
        self._last_received = now = self._loop.now()
        self.server.messages_received += 1
        if 'message' in self._listeners:
            self._emit_local('message', frame)
        try:
            packets = parse_frame(frame, self.server.codec.decode,
                                  self.server.options['maxBatchPackets'])
        except BatchTooLarge as exc:
            self._refuse(CloseCode.MESSAGE_TOO_BIG, str(exc))
            return
        if self.state == CONNECTING and self.server.strict_handshake and not self._handshake_started:
            first = packets[0] if packets else None
            if type(first) is not Event or first.event != '#handshake':
                self.disconnect(CloseCode.MESSAGE_BEFORE_HANDSHAKE)
                return
        limiter = self._limiter
        if limiter is None:
            self._handle_packets(packets, len(frame))
            return
        self._handle_packets(packets, len(frame), limiter, now, not limiter.frame_allowed(len(frame), now))
        if limiter.overstayed(now):
            self._refuse(CloseCode.RATE_LIMITED, 'Rate limit exceeded for longer than rateLimitGrace')

    def _handle_packets(self, packets, size, limiter=None, now=0.0, over_bytes=False):
        """Dispatch ``packets`` (one frame of ``size``) in order; while a handshake is in
        progress, the rest wait for it.  With a ``limiter``, an event over the socket's
        rates (or in a frame over its byte rate: ``over_bytes``) is refused instead."""
        dispatch = self._dispatch
        for index, packet in enumerate(packets):
            if index and index % YIELD_EVERY == 0:
                yield_to_loop()
            if self.state == CLOSED:
                return
            if self._waiting is not None:
                self._wait_for_handshake(packets[index:], size)
                return
            if limiter is not None and type(packet) is Event and packet.event != '#disconnect' and \
                    (over_bytes or not limiter.packet_allowed(now)):
                self._refuse_over_limit(packet)
                continue
            dispatch[type(packet)](self, packet)

    def _refuse_over_limit(self, packet):
        """Answer an event over the rate limits with a RateLimitError (a warning the first time)."""
        server = self.server
        server.rate_limited += 1
        err = RateLimitError('Socket %s exceeded its inbound rate limits (%s messages, %s bytes a '
                             'second)' % (self.id, server.options['inboundMessagesPerSecond'],
                                          server.options['inboundBytesPerSecond']))
        if self._limiter.refused == 1:
            server.emit_warning(err)
        Responder(packet.cid, self._send_reply)(err)

    def _wait_for_handshake(self, packets, size):
        """Queue ``packets`` until the handshake completes; too many close with 1009."""
        server = self.server
        self._waiting.extend(packets)
        self._waiting_bytes += size
        limit = server.options['maxBatchPackets']
        byte_limit = server.max_payload or DEFAULT_WAITING_BYTES
        if len(self._waiting) > limit or self._waiting_bytes > byte_limit:
            self._refuse(CloseCode.MESSAGE_TOO_BIG, 'Too many messages before the handshake completed')

    def _release_waiting(self):
        """Handle, in order, the packets that arrived while the handshake was in progress."""
        waiting = self._waiting
        dispatch = self._dispatch
        count = 0
        try:
            while waiting and self.state != CLOSED:
                packet = waiting.popleft()
                dispatch[type(packet)](self, packet)
                count += 1
                if count % YIELD_EVERY == 0:
                    yield_to_loop()
        except Exception:
            self._close_on_failure()
        finally:
            self._waiting = None
            self._waiting_bytes = 0

    def _close_on_failure(self):
        """Called in an ``except`` block: log the failure with its traceback, close with 1011."""
        log.exception('socket %s closes with 1011 after a failure while handling a packet', self.id)
        if self.state != CLOSED:
            try:
                self._on_sc_close(CloseCode.UNEXPECTED_CONDITION, 'Server encountered an unexpected condition')
            except Exception:
                log.exception('socket %s failed to run its close sequence', self.id)
        self.socket.close(CloseCode.UNEXPECTED_CONDITION)

    def _guarded(self, fn, *args):
        """``fn(*args)`` in a greenlet of its own, closing with 1011 if it raises."""
        try:
            fn(*args)
        except Exception:
            self._close_on_failure()

    def _refuse(self, code, reason):
        """Close with ``code``: ``#disconnect`` carries ``reason``, the close frame too."""
        if self.state == CLOSED:
            return
        log.info('socket %s closes with %s: %s', self.id, code, reason)
        self.send_object(event_packet('#disconnect', {'code': code, 'data': reason}))
        self._on_sc_close(code, reason)
        self.socket.close(code, reason)

    def _on_raw(self, packet):
        self._emit_local('raw', packet.frame)

    def _on_ping(self, _packet):
        self._emit_local('raw', protocol.PING)

    def _on_pong(self, packet):
        if self._token_expiry is not None:
            self._expired_token_error()

    def _on_response(self, packet):
        entry = self._calls.pop(packet.rid)
        if entry is None:
            return
        if entry[2] is not None:
            entry[2].close()
        try:
            entry[1](hydrate(packet.error), none_if_undefined(packet.data))
        except Exception as exc:  # the application's callback: its bug costs the client nothing
            log.exception('the callback of %r raised', entry[0])
            self.server.emit('warning', exc)

    def _on_event(self, packet):
        name = packet.event
        if name in LOCAL_EVENTS:
            return
        expired = self._expired_token_error() if self._token_expiry is not None else None
        absent = packet.data is UNDEFINED
        if name[:1] == '#':
            handler = self._reserved.get(name)
            if handler is not None:
                handler(self, packet, expired)
            else:
                self._dispatch_event(name, none_if_undefined(packet.data), packet.cid, absent)
            return
        middleware = self.server.middleware
        if not middleware.has(MIDDLEWARE_EMIT):
            self._dispatch_event(name, none_if_undefined(packet.data), packet.cid, absent)
            return
        req = Request(socket=self, event=name, data=none_if_undefined(packet.data))
        if expired is not None:
            req.authTokenExpiredError = expired

        def done(err, _extra):
            if err:
                Responder(packet.cid, self._send_reply)(err)
            else:
                self._dispatch_event(name, req.data, packet.cid, absent and req.data is None)
        middleware.run(MIDDLEWARE_EMIT, req, done)

    def _dispatch_event(self, name, data, cid, absent):
        """Call the handlers of a custom event with ``(data, respond)``; ``absent`` when the
        client sent no data (None for the handler, no data in an echoed reply)."""
        listeners = self._listeners.get(name)
        if not listeners:
            return
        respond = Responder(cid, self._send_reply, absent)
        for listener in tuple(listeners):
            try:
                listener(data, respond)
            except Exception as exc:
                # the caller gets a generic error, the server log the traceback (once); the
                # worker lives on: a client must not crash it with data a handler did not expect
                log.exception('the handler of %r raised', name)
                if cid and not respond.sent:
                    respond(public_error(exc, self._verbose_errors))
                self.server.emit('warning', exc)

    # -- reserved events ---------------------------------------------------------

    def _on_handshake_event(self, packet, _expired):
        if self._handshake_started:
            return
        self._handshake_started = True
        self._waiting = deque()
        if self._handshake_timer is not None:
            self._handshake_timer.close()
            self._handshake_timer = None
        if self.server.handshake_may_wait():
            # a slow middleware or verifier must not stop this socket's reader: the close of a
            # client that leaves meanwhile is read, and the socket aborts (B-059 of
            # docs/behaviours-coverage.md); what the client sends meanwhile waits in self._waiting
            gevent.spawn(self._guarded, self._handshake, packet)
        else:
            self._handshake(packet)

    def _handshake(self, packet):
        respond = Responder(packet.cid, self._send_reply)
        data = packet.data if isinstance(packet.data, dict) else {}
        signed_token = data.get('authToken')
        server = self.server

        def after_middleware(err, code):
            if err:
                code = getattr(err, 'statusCode', None) or code or CloseCode.HANDSHAKE_REJECTED
                respond(err, {'code': code})
                self.disconnect(code)
                return
            if signed_token is None and type(server.auth) is AuthEngine:
                after_auth(None, False)  # gsc's own engine would only say "jwt must be provided"
            else:
                self._process_auth_token(signed_token, after_auth)

        def after_auth(auth_error, is_bad):
            if self.state == CLOSED:
                return
            if signed_token is None:
                auth_error = None
            elif auth_error is not None:
                self._reject_token(auth_error, is_bad, signed_token)
            server.promote_socket(self)
            server.handshakes += 1
            self.state = transition(self.state, 'handshake')
            status = {'id': self.id, 'pingTimeout': server.ping_timeout}
            if auth_error is not None:
                status['authError'] = auth_error
            status['isAuthenticated'] = self.auth_state == AUTHENTICATED
            client_status = dict(status)
            if auth_error is not None:
                client_status['authError'] = dehydrate(auth_error)
            self._emit_local('connect', status)
            self._emit_local('_connect', status)
            server.emit('connection', self, status)
            server.emit('_connection', self, status)
            if self.auth_state == AUTHENTICATED:
                self._trigger_authentication_events(UNAUTHENTICATED)
            respond(None, client_status)
            self._release_waiting()

        if server.middleware.has(MIDDLEWARE_HANDSHAKE_SC):
            server.middleware.run(MIDDLEWARE_HANDSHAKE_SC, Request(socket=self), after_middleware)
        else:
            after_middleware(None, None)

    def _on_disconnect_event(self, packet, _expired):
        data = packet.data if isinstance(packet.data, dict) else {}
        code = data.get('code')
        if not isinstance(code, int) or isinstance(code, bool):
            code = CloseCode.NO_STATUS  # a missing or malformed code counts as "closed without status code"
        reason = data.get('data')
        if self.state != CLOSED:
            self._on_sc_close(code, reason)
        self.socket.close(code if code in VALID_CLOSE_CODES else CloseCode.NORMAL)

    _dispatch = {Event: _on_event, Response: _on_response, Pong: _on_pong, Ping: _on_ping,
                 Raw: _on_raw}

    _reserved = {
        '#handshake': _on_handshake_event,
        '#authenticate': SocketAuth._on_authenticate,
        '#removeAuthToken': SocketAuth._on_remove_auth_token,
        '#subscribe': SocketPubSub._on_subscribe,
        '#unsubscribe': SocketPubSub._on_unsubscribe,
        '#publish': SocketPubSub._on_publish,
        '#disconnect': _on_disconnect_event,
        '#presence': SocketPubSub._on_presence,
    }

    # -- outbound ----------------------------------------------------------------

    def send(self, data, options=None):
        """Send a raw frame (str: text, bytes: binary), bypassing the codec."""
        self.server.messages_sent += 1
        self.socket.send(data)

    def _send_reply(self, packet):
        """Encode and send a response packet; raises when it cannot be encoded (Responder)."""
        server = self.server
        self.socket.send(server.codec.encode(packet))
        server.messages_sent += 1

    def send_object(self, obj, options=None):
        """Encode ``obj`` and send it; ``options={'batch': True}`` queues it in a batch frame."""
        if options and options.get('batch'):
            self._queue_batched(obj)
            return
        try:
            frame = self.server.codec.encode(obj)
        except ValueError as exc:
            self._emit_error(exc)
            return
        self.server.messages_sent += 1
        self.socket.send(frame)

    def _queue_batched(self, obj):
        if obj is None:
            return
        if self._batch is None:
            timer = self._loop.timer((self.server.pub_sub_batch_duration or 0) / 1000.0)
            self._batch = ([], timer)
            timer.start(self._flush_batch)
        self._batch[0].append(obj)

    def _flush_batch(self):
        batch, self._batch = self._batch, None
        if batch is not None and self.state != CLOSED:
            batch[1].close()
            self.send_object(batch[0])

    def emit(self, event, data=UNDEFINED, callback=None, options=None):
        """Send ``event`` to the client; ``callback(err, data)`` gets its answer or a TimeoutError.

        Local event names are refused with an InvalidActionError on the socket's ``error``
        event, except ``'error'`` itself, which is emitted locally.
        """
        if event in LOCAL_EVENTS:
            if event == 'error':
                self._emit_local('error', data)
            else:
                self._emit_error(InvalidActionError(
                    'The "%s" event is reserved and cannot be emitted on a server socket' % event))
            return
        cid = None
        if callback is not None:
            if self.state == CLOSED:
                callback(_aborted(event), None)
                return
            cid = self._calls.next_cid()
            entry = self._calls.add(cid, event, callback)
            timer = self._loop.timer(self.server.ack_timeout / 1000.0)
            entry[2] = timer
            timer.start(self._on_ack_timeout, cid)
        self.send_object(event_packet(event, data, cid))

    def _on_ack_timeout(self, cid):
        entry = self._calls.pop(cid)
        if entry is not None:
            self.server.ack_timeouts += 1
            entry[2].close()
            err = TimeoutError("Event response for '%s' timed out" % entry[0])
            gevent.spawn(entry[1], err, {'event': entry[0], 'cid': cid})

    def send_publish_frame(self, prepared):
        """Send a prepared ``#publish`` frame (the exchange encodes once per worker); on a
        channel this socket recovers, held or dropped by its gate (see :meth:`_recover`)."""
        if self._history_gates is not None and type(prepared) is HistoryFrame:
            gate = self._history_gates.get(prepared.channel)
            if gate is not None and not gate.passes(prepared, prepared.offset, prepared.epoch):
                return
        self.server.messages_sent += 1
        self.socket.send_frame(prepared)

    # -- closing -----------------------------------------------------------------

    def disconnect(self, code=CloseCode.NORMAL, data=UNDEFINED):
        """Send ``#disconnect`` with ``code`` and ``data``, run the close sequence, close the socket."""
        if not isinstance(code, int) or isinstance(code, bool):
            self._emit_error(InvalidArgumentsError('If specified, the code argument must be a number'))
            code = CloseCode.NORMAL
        if self.state == CLOSED:
            return
        packet = {'code': code}
        if data is not UNDEFINED:
            packet['data'] = data
        self.send_object(event_packet('#disconnect', packet))
        self._on_sc_close(code, data)
        self.socket.close(code if code in VALID_CLOSE_CODES else CloseCode.NORMAL)

    def destroy(self, code=CloseCode.NORMAL, data=UNDEFINED):
        """``active = False``, then :meth:`disconnect`."""
        self.active = False
        self.disconnect(code, data)

    def terminate(self):
        """Drop the TCP connection without a closing handshake."""
        self.socket.abort()

    def _on_sc_close(self, code, data=UNDEFINED):
        previous = self.state
        self.state = transition(previous, 'close')
        self._stop_timers()
        data = none_if_undefined(data)
        for entry in self._calls.pop_all():
            if entry[2] is not None:
                entry[2].close()
            entry[1](_aborted(entry[0]), None)
        server = self.server
        for channel in list(self.channel_subscriptions):
            self._unsubscribe(channel)
        server.remove_socket(self)
        server_event, socket_event = CLOSE_EVENTS[previous]
        for event in (server_event, '_' + server_event, 'closure', '_closure'):
            server.emit(event, self, code, data)
        self._emit_local(socket_event, code, data)
        self._emit_local('_' + socket_event, code, data)
        self._emit_local('close', code, data)
        self._emit_local('_close', code, data)
        err = close_error(code, data)
        if err is not None:
            self._emit_error(err)

    # -- local events ------------------------------------------------------------

    def _emit_local(self, event, *args):
        EventEmitter.emit(self, event, *args)

    def _emit_error(self, err):
        """The socket's ``error`` event, re-emitted by the server as ``warning``."""
        self._emit_local('error', err)
        self.server.emit_warning(err)
