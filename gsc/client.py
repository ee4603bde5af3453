"""A gevent client of the SocketCluster protocol v1, behaving like socketcluster-client 14.x.

Packets are classified by :mod:`gsc.core.protocol` and frames carried by
:class:`gsc.transport.WebSocketTransport`; this module adds the client's state machine:
the ``#handshake``, the emit buffer and ack timers, the ping timer, the auth token kept
across reconnects, channels that re-subscribe after a reconnect, and the auto-reconnect
policy (docs/protocol.md).

On a channel with history the client remembers the position (offset, epoch) of the last
``#publish`` it received, and re-subscribes with ``{'recover': position}`` after a reconnect:
the server writes what was missed, then ``#recovery``, which the client emits as ``recovery``
on the channel and on the client (docs/history.md).

Every connection attempt is a :class:`_Connection`: one greenlet opens the TCP (or TLS)
socket, performs the HTTP upgrade, then runs the transport's reader loop.  Handlers of
server events run in that reader greenlet, so they must not block on an answer from the
same client (:meth:`SCClientSocket.invoke` refuses to).  Timers are gevent greenlets.
"""

import base64
import logging
from collections import deque

import gevent
from gevent import socket as gsocket
from gevent import ssl as gssl
from gevent.event import AsyncResult
from websockets.client import ClientProtocol
from websockets.protocol import Side
from websockets.uri import parse_uri

from .core import codec
from .core.checks import is_int
from .core.client_state import (LOCAL_EVENTS, PENDING, SUBSCRIBED, UNSUBSCRIBED,
                                authenticate_outcome, bad_connection, client_uri, decorate,
                                enter_authenticated, enter_unauthenticated, error_string,
                                handshake_close_code, server_disconnect,
                                handshake_status, is_error_named, normal_path, normal_query,
                                ping_timeout, publication_position, reconnect_delay,
                                reconnect_options, reconnects_after, recovered_position,
                                subscribe_change, subscribe_data, undecorate)
from .core.emitter import EventEmitter
from .errors import (CloseCode, InvalidActionError, InvalidArgumentsError, InvalidMessageError,
                     SCError, TimeoutError, close_error, hydrate)
from .core.protocol import (AUTHENTICATED, CLOSED, CONNECTING, OPEN, UNAUTHENTICATED, UNDEFINED,
                       CallTable, Event, Ping, Responder, Response, defined, event_packet,
                       parse_frame)
from .transport import READ_SIZE, WebSocketTransport

__all__ = ['create', 'SCClientSocket', 'ClientChannel', 'PENDING', 'SUBSCRIBED', 'UNSUBSCRIBED']

log = logging.getLogger(__name__)

STATES = (CONNECTING, OPEN, CLOSED)
MAX_HTTP_HEAD = 65536


def create(**options):
    """A new :class:`SCClientSocket` (the options are its keyword arguments)."""
    return SCClientSocket(**options)


def _later(seconds, fn, *args):
    """A cancellable timer: ``fn(*args)`` in its own greenlet after ``seconds``."""
    return gevent.spawn_later(seconds, fn, *args)


def _cancel(timer):
    if timer is not None and timer is not gevent.getcurrent():
        timer.kill(block=False)


class _Call:
    """One emit waiting to be sent and/or answered; ``finish`` calls back at most once."""

    __slots__ = ('event', 'data', 'callback', 'timer', 'cid')

    def __init__(self, event, data, callback):
        self.event = event
        self.data = data
        self.callback = callback
        self.timer = None
        self.cid = None

    def finish(self, err=None, data=None):
        callback, self.callback = self.callback, None
        _cancel(self.timer)
        self.timer = None
        if callback is not None:
            callback(err, data)


class _PrefixedReader:
    """``read(n)`` that first returns the bytes left over after the HTTP response."""

    __slots__ = ('rest', 'read')

    def __init__(self, rest, read):
        self.rest = rest
        self.read = read

    def __call__(self, size):
        if self.rest:
            data, self.rest = self.rest, b''
            return data
        return self.read(size)


class _Connection:
    """One connection attempt: socket, HTTP upgrade, then the transport's reader loop."""

    __slots__ = ('client', 'sock', 'transport', 'greenlet')

    def __init__(self, client):
        self.client = client
        self.sock = None
        self.transport = None
        self.greenlet = None

    def start(self):
        self.greenlet = gevent.spawn(self._run)

    def _run(self):
        client = self.client
        try:
            stream, rest = self._open()
        except Exception as exc:  # refused, reset, TLS failure, upgrade refused
            log.info('gsc client: cannot connect to %s: %s', client.uri, exc)
            self._close_socket()
            client._on_conn_close(self, CloseCode.ABNORMAL, None)
            return
        except BaseException:  # killed while connecting
            self._close_socket()
            raise
        self.transport = WebSocketTransport(
            stream, lambda frame: client._on_conn_message(self, frame),
            lambda code, reason: client._on_conn_close(self, code, reason or None),
            side=Side.CLIENT, max_payload=client.max_payload,
            read=_PrefixedReader(rest, stream.recv))
        client._on_conn_open(self)
        self.transport.run()

    def _open(self):
        """Connect, upgrade; the stream for the transport and the bytes read past the response."""
        client = self.client
        self.sock = sock = gsocket.create_connection((client.hostname, client.port))
        sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
        if client.secure:
            context = client.ssl_context or gssl.create_default_context()
            # gevent's SSLSocket even for a stdlib context: its handshake must yield, not block
            self.sock = sock = gssl.SSLSocket(sock=sock, server_hostname=client.hostname,
                                              _context=context)
        protocol = ClientProtocol(parse_uri(client.uri), max_size=client.max_payload)
        protocol.send_request(protocol.connect())
        sock.sendall(b''.join(protocol.data_to_send()))
        buffer = b''
        while b'\r\n\r\n' not in buffer:
            data = sock.recv(READ_SIZE)
            if not data:
                raise ConnectionError('connection closed during the HTTP upgrade')
            buffer += data
            if len(buffer) > MAX_HTTP_HEAD:
                raise ConnectionError('HTTP upgrade response too large')
        end = buffer.index(b'\r\n\r\n') + 4
        head, rest = buffer[:end], buffer[end:]
        status_line = head.split(b'\r\n', 1)[0].decode('latin-1')
        if status_line.split(' ')[1:2] != ['101']:
            raise ConnectionError('HTTP upgrade refused: %s' % status_line)
        protocol.receive_data(head)
        protocol.events_received()
        if protocol.handshake_exc is not None:
            raise protocol.handshake_exc
        return sock, rest

    def _close_socket(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass

    def send(self, frame):
        """Send one frame; False when the WebSocket is not open."""
        return self.transport is not None and self.transport.send(frame)

    def close(self, code):
        """Close with ``code`` (or drop the attempt when the WebSocket is not open yet)."""
        if self.transport is not None:
            try:
                self.transport.close(code)
            except Exception:  # a code that cannot go in a close frame (1005, 1006)
                self.transport.abort()
            return
        if self.greenlet is not None and self.greenlet is not gevent.getcurrent():
            self.greenlet.kill(block=False)
        self._close_socket()


class ClientChannel(EventEmitter):
    """A channel of one client: ``state`` pending/subscribed/unsubscribed, watchers, and the
    events ``subscribe``, ``subscribeFail``, ``unsubscribe``, ``kickOut``, ``subscribeStateChange``,
    ``recovery(result)``; ``position``: ``(offset, epoch)`` of the last publication received on
    a channel with history (None before one)."""

    __slots__ = ('name', 'client', 'state', 'wait_for_auth', 'data', 'batch', 'priority',
                 'pending_cid', 'position')

    def __init__(self, name, client, wait_for_auth=False, data=None, batch=False, priority=0):
        super().__init__()
        self.name = name
        self.client = client
        self.state = UNSUBSCRIBED
        self.wait_for_auth = bool(wait_for_auth)
        self.data = data
        self.batch = bool(batch)
        self.priority = priority or 0
        self.pending_cid = None
        self.position = None

    def set_options(self, wait_for_auth=None, data=None, batch=None, priority=None):
        """Change the subscription options given (None leaves one as it is)."""
        if wait_for_auth is not None:
            self.wait_for_auth = bool(wait_for_auth)
        if data is not None:
            self.data = data
        if batch is not None:
            self.batch = bool(batch)
        if priority is not None:
            self.priority = priority

    def subscribe(self, **options):
        """Subscribe to this channel (options as :meth:`SCClientSocket.subscribe`)."""
        return self.client.subscribe(self.name, **options)

    def unsubscribe(self):
        """Unsubscribe from this channel."""
        self.client.unsubscribe(self.name)

    def is_subscribed(self, include_pending=False):
        """True when subscribed (or pending, with ``include_pending``)."""
        return self.client.is_subscribed(self.name, include_pending)

    def publish(self, data=UNDEFINED, callback=None):
        """Publish ``data`` to this channel (without data when left out); ``callback(err, ack_data)``."""
        self.client.publish(self.name, data, callback)

    def watch(self, fn):
        """Call ``fn(data)`` for every message of this channel."""
        self.client.watch(self.name, fn)

    def unwatch(self, fn=None):
        """Remove one watcher, or all."""
        self.client.unwatch(self.name, fn)

    def watchers(self):
        """The watchers of this channel."""
        return self.client.watchers(self.name)

    def destroy(self):
        """Unsubscribe, unwatch and forget this channel."""
        self.client.destroy_channel(self.name)

    def __repr__(self):
        return '<ClientChannel %r %s>' % (self.name, self.state)


class SCClientSocket:
    """A SocketCluster client socket (see the module docstring and :func:`create`).

    Timeouts are in seconds; ``auto_reconnect_options`` uses the JS client's keys in
    milliseconds (``initialDelay``, ``randomness``, ``multiplier``, ``maxDelay``).
    """

    def __init__(self, hostname='127.0.0.1', port=8000, path='/socketcluster/', secure=False,
                 query=None, auth_token=None, ack_timeout=10.0, connect_timeout=20.0,
                 auto_connect=True, auto_reconnect=True, auto_reconnect_options=None,
                 ping_timeout_disabled=False, channel_prefix=None, max_payload=None,
                 ssl_context=None):
        self.hostname = hostname
        self.port = port
        self.secure = secure
        self.path = normal_path(path)
        self.query = normal_query(query)
        self.ssl_context = ssl_context
        self.ack_timeout = ack_timeout
        self.connect_timeout = connect_timeout
        self.ping_timeout = ack_timeout  # replaced by the server's pingTimeout (B-128, docs/behaviours-coverage.md)
        self.ping_timeout_disabled = bool(ping_timeout_disabled)
        self.channel_prefix = channel_prefix or None
        self.max_payload = max_payload
        self.auto_reconnect = auto_reconnect
        self.auto_reconnect_options = reconnect_options(auto_reconnect_options)

        self.id = None
        self.state = CLOSED
        self.active = True
        self.auth_state = UNAUTHENTICATED
        self.signed_auth_token = None
        self.auth_token = None
        self.pending_reconnect = False
        self.pending_reconnect_timeout = None
        self.connect_attempts = 0

        self._stored_token = auth_token  # the JS client's token store (in memory)
        self._emitter = EventEmitter()
        self._channel_emitter = EventEmitter()
        self._channels = {}
        self._calls = CallTable()  # one cid counter for the life of the client
        self._buffer = deque()
        self._batch = []
        self._conn = None
        self._connect_timer = None
        self._ping_timer = None
        self._reconnect_timer = None
        self._preparing_subscriptions = False
        self._private_handlers = {
            '#publish': self._on_publish, '#kickOut': self._on_kick_out,
            '#setAuthToken': self._on_set_auth_token, '#removeAuthToken': self._on_remove_auth_token,
            '#disconnect': self._on_server_disconnect, '#recovery': self._on_recovery,
        }
        if auto_connect:
            self.connect()

    @property
    def uri(self):
        """The WebSocket URL this client connects to."""
        return client_uri(self.hostname, self.port, self.path, self.secure, self.query)

    # -- local events --------------------------------------------------------------

    def on(self, event, fn):
        """Call ``fn`` on every local ``event`` (or server event of that name)."""
        return self._emitter.on(event, fn)

    def once(self, event, fn):
        """Call ``fn`` on the next ``event`` only."""
        return self._emitter.once(event, fn)

    def off(self, event=None, fn=None):
        """Remove one listener, all listeners of ``event``, or all."""
        self._emitter.off(event, fn)

    def listeners(self, event):
        """The listeners of ``event``."""
        return self._emitter.listeners(event)

    def _report_error(self, err):
        """Emit ``error`` on a later turn of the loop, like the JS client's setTimeout(0)."""
        gevent.spawn(self._emit_error, err)

    def _emit_error(self, err):
        if not self._emitter.emit('error', err):
            log.warning('gsc client error without an error listener: %s', error_string(err))

    # -- connection lifecycle ----------------------------------------------------------

    def connect(self):
        """Open a connection unless one is open or opening."""
        if not self.active:
            self._report_error(InvalidActionError('Cannot connect a destroyed client'))
            return
        if self.state != CLOSED:
            return
        self._cancel_reconnect()
        self.state = CONNECTING
        conn = self._conn = _Connection(self)
        self._connect_timer = _later(self.connect_timeout, self._on_connect_timeout, conn)
        self._emitter.emit('connecting')
        if conn is self._conn:
            conn.start()

    open = connect

    def disconnect(self, code=CloseCode.NORMAL, data=None):
        """Send ``#disconnect`` {code, data} (when open) and close with ``code``."""
        code = code or CloseCode.NORMAL
        if not is_int(code):
            raise InvalidArgumentsError('If specified, the code argument must be a number')
        if self.state != CLOSED:
            self._close(code, data)
        else:
            self._cancel_reconnect()

    def reconnect(self, code=None, data=None):
        """Disconnect (with ``code`` and ``data``), then connect again."""
        self.disconnect(code, data)
        self.connect()

    def destroy(self, code=None, data=None):
        """Disconnect for good: the client never connects again."""
        self.active = False
        self.disconnect(code, data)

    def _close(self, code, data):
        """The JS transport's close(): tell an open server why, then close the socket."""
        conn = self._conn
        if conn is None:
            return
        if self.state == OPEN:
            packet = {'code': code}
            if data is not None:
                packet['data'] = data
            self._send_packet(event_packet('#disconnect', packet))
        self._abort(code, data)

    def _abort(self, code, data=None):
        """Report the close with ``code``, then close the socket with it (no ``#disconnect``)."""
        conn = self._conn
        if conn is None:
            return
        self._on_closed(code, data)
        conn.close(code)

    def _on_connect_timeout(self, conn):
        if conn is self._conn and self.state == CONNECTING:
            self._abort(CloseCode.CONNECT_TIMEOUT)

    def _reset_ping_timer(self):
        _cancel(self._ping_timer)
        self._ping_timer = None
        if not self.ping_timeout_disabled and self._conn is not None:
            self._ping_timer = _later(self.ping_timeout, self._on_ping_timeout, self._conn)

    def _on_ping_timeout(self, conn):
        if conn is self._conn:
            self._abort(CloseCode.SERVER_PING_TIMEOUT)

    def _on_conn_open(self, conn):
        """The WebSocket is open: send ``#handshake`` with the stored token."""
        if conn is not self._conn:
            conn.close(CloseCode.NORMAL)
            return
        _cancel(self._connect_timer)
        self._connect_timer = None
        self._reset_ping_timer()
        token = self._stored_token
        call = _Call('#handshake', {'authToken': token},
                     lambda err, status: self._on_handshake(conn, token, err, status))
        call.timer = _later(self.ack_timeout, self._on_ack_timeout, call)
        self._send_call(call)

    def _on_handshake(self, conn, token, err, status):
        if conn is not self._conn:
            return
        status = handshake_status(status, token)
        if err:
            self._report_error(err)
            self._abort(handshake_close_code(status), error_string(err))
            return
        self.state = OPEN
        self._on_open(status or {})
        if conn is self._conn:
            self._reset_ping_timer()

    def _on_open(self, status):
        self._preparing_subscriptions = True
        self.id = status.get('id')
        self.ping_timeout = ping_timeout(status, self.ping_timeout)
        if status.get('isAuthenticated'):
            self._change_to_authenticated(status.get('authToken'))
        else:
            self._change_to_unauthenticated()
        self.connect_attempts = 0
        self._process_pending_subscriptions()
        self._emitter.emit('connect', status)
        if self.state == OPEN:
            self._flush_buffer()

    def _on_conn_close(self, conn, code, reason):
        if conn is self._conn:
            self._on_closed(code, reason)

    def _on_closed(self, code, data):
        """The connection is gone: abort calls, suspend channels, maybe reconnect, report."""
        self._conn = None
        _cancel(self._connect_timer)
        _cancel(self._ping_timer)
        self._connect_timer = self._ping_timer = None
        self._batch = []
        open_abort = self.state != OPEN
        self.state = CLOSED
        self.id = None
        self._cancel_reconnect()
        failure = 'connectAbort' if open_abort else 'disconnect'
        for event, finish, _ in self._calls.pop_all():
            finish(bad_connection(event, failure))
        self._suspend_subscriptions()
        while self._buffer:
            call = self._buffer.popleft()
            call.finish(bad_connection(call.event, failure))
        initial_delay = reconnects_after(code)
        if self.auto_reconnect and self.active and initial_delay is not False:
            self._try_reconnect(initial_delay)
        self._emitter.emit('connectAbort' if open_abort else 'disconnect', code, data)
        self._emitter.emit('close', code, data)
        err = close_error(code, data)
        if err is not None:
            self._report_error(err)

    def _try_reconnect(self, initial_delay=None):
        """Schedule connect(): ``initial_delay`` ms for a first attempt, else back-off (docs/protocol.md)."""
        delay = reconnect_delay(self.auto_reconnect_options, self.connect_attempts, initial_delay)
        self.connect_attempts += 1
        self._cancel_reconnect()
        self.pending_reconnect = True
        self.pending_reconnect_timeout = delay
        self._reconnect_timer = _later(delay / 1000.0, self.connect)

    def _cancel_reconnect(self):
        self.pending_reconnect = False
        self.pending_reconnect_timeout = None
        _cancel(self._reconnect_timer)
        self._reconnect_timer = None

    # -- sending -----------------------------------------------------------------------

    def send(self, data):
        """Send a raw frame (str or bytes), bypassing the codec."""
        conn = self._conn
        if conn is not None and conn.send(data):
            return
        if conn is not None and self.state == CONNECTING:
            self._abort(1005)  # the JS client on a send before the WebSocket opened

    def _send_frame(self, frame, batch=False):
        conn = self._conn
        if conn is None or conn.transport is None:
            return False
        if not batch:
            return conn.send(frame)
        if not self._batch:
            gevent.get_hub().loop.run_callback(self._flush_batch, conn)
        self._batch.append(frame)
        return True

    def _flush_batch(self, conn):
        frames, self._batch = self._batch, []
        if frames and conn is self._conn:
            conn.send('[' + ','.join(frames) + ']')

    def _send_packet(self, packet, batch=False):
        """Encode and send one packet; an unencodable one is reported as ``error``."""
        try:
            frame = codec.encode(packet)
        except ValueError as exc:
            self._report_error(exc)
            return exc
        self._send_frame(frame, batch)
        return None

    def _send_call(self, call, batch=False):
        """Send a call now, registering its cid when it wants an answer."""
        if call.callback is not None:
            call.cid = self._calls.next_cid()
            self._calls.add(call.cid, call.event, call.finish)
        err = self._send_packet(event_packet(call.event, call.data, call.cid), batch)
        if err is not None:
            self._calls.pop(call.cid)
            call.finish(err)
        return call.cid

    def _flush_buffer(self):
        while self._buffer and self.state == OPEN:
            self._send_call(self._buffer.popleft())

    def _on_ack_timeout(self, call):
        try:
            self._buffer.remove(call)
        except ValueError:
            pass
        self._calls.pop(call.cid)
        call.finish(TimeoutError("Event response for '%s' timed out" % call.event))

    def emit(self, event, data=UNDEFINED, callback=None):
        """Emit ``event`` to the server; ``callback(err, data)`` gets its answer.

        Emits are queued until the handshake completes (connecting if closed); the
        callback gets TimeoutError after ``ack_timeout`` or BadConnectionError on a drop.
        ``emit('error', err)`` emits locally; other local event names are refused.
        """
        if event not in LOCAL_EVENTS:
            self._emit(event, data, callback, self.ack_timeout)
        elif event == 'error':
            self._emitter.emit('error', data)
        else:
            self._report_error(InvalidActionError(
                'The "%s" event is reserved and cannot be emitted on a client socket' % event))

    def _emit(self, event, data, callback, ack_timeout):
        if self.state == CLOSED:
            self.connect()
        call = _Call(event, data, callback)
        call.timer = _later(ack_timeout, self._on_ack_timeout, call)
        self._buffer.append(call)
        if self.state == OPEN:
            self._flush_buffer()

    def invoke(self, event, data=UNDEFINED, timeout=None):
        """Emit and wait for the answer in this greenlet: its data, or the error raised.

        ``timeout`` (seconds) replaces ``ack_timeout`` for this call.  Not callable from a
        handler of this client's events (that greenlet reads the answer).
        """
        if event in LOCAL_EVENTS:
            raise InvalidActionError(
                'The "%s" event is reserved and cannot be emitted on a client socket' % event)
        if self._conn is not None and gevent.getcurrent() is self._conn.greenlet:
            raise InvalidActionError('invoke() cannot wait inside a handler of the same client')
        result = AsyncResult()
        self._emit(event, data, lambda err, value: result.set((err, value)),
                   self.ack_timeout if timeout is None else timeout)
        err, value = result.get()
        if err is not None:
            raise err if isinstance(err, BaseException) else SCError(str(err), data=err)
        return value

    def publish(self, channel, data=UNDEFINED, callback=None):
        """Publish ``data`` to ``channel`` through the server (a publication without data when
        left out, as JavaScript's ``undefined``); ``callback(err, ack_data)``."""
        self.emit('#publish', defined(channel=self._decorate(channel), data=data), callback)

    # -- inbound -------------------------------------------------------------------

    def _on_conn_message(self, conn, frame):
        if conn is not self._conn:
            return
        self._emitter.emit('message', frame)
        for packet in parse_frame(frame):
            if conn is not self._conn:
                return
            try:
                self._handle_packet(conn, packet, frame)
            except Exception as exc:  # a failing handler must not kill the reader
                log.exception('gsc client: a handler failed')
                self._report_error(exc)

    def _handle_packet(self, conn, packet, frame):
        kind = type(packet)
        if kind is Ping:
            self._reset_ping_timer()
            conn.send(codec.PONG)
        elif kind is Event:
            data = None if packet.data is UNDEFINED else packet.data
            respond = Responder(packet.cid, self._send_packet)
            handler = self._private_handlers.get(packet.event)
            if handler is not None:
                handler(data, respond)
            elif packet.event in LOCAL_EVENTS:
                log.info('gsc client: ignoring the reserved event %r from the server', packet.event)
            else:
                self._emitter.emit(packet.event, data, respond)
        elif kind is Response:
            entry = self._calls.pop(packet.rid)
            if entry is not None:
                entry[1](hydrate(packet.error), None if packet.data is UNDEFINED else packet.data)
        else:
            self._emitter.emit('raw', frame)

    def _on_publish(self, data, respond):
        if isinstance(data, dict):
            name = self._undecorate(data.get('channel'))
            if self.is_subscribed(name, True):
                position = publication_position(data)
                if position is not None:
                    self._channels[name].position = position
                self._channel_emitter.emit(name, data.get('data'))

    def _on_recovery(self, data, respond):
        """``#recovery``: the channel's ``recovery`` event, then the client's
        ``recovery(channel, result)``; the position moves to the latest when it is behind."""
        if not isinstance(data, dict):
            return
        name = self._undecorate(data.get('channel'))
        channel = self._channels.get(name)
        if channel is None:
            return
        channel.position = recovered_position(channel.position, data)
        channel.emit('recovery', data)
        self._emitter.emit('recovery', name, data)

    def _on_kick_out(self, data, respond):
        if isinstance(data, dict):
            name = self._undecorate(data.get('channel'))
            channel = self._channels.get(name)
            if channel is not None:
                self._emitter.emit('kickOut', data.get('message'), name)
                channel.emit('kickOut', data.get('message'), name)
                self._trigger_unsubscribe(channel)

    def _on_set_auth_token(self, data, respond):
        if isinstance(data, dict) and data.get('token'):
            self._stored_token = data['token']
            self._change_to_authenticated(data['token'])
            respond()
        else:
            respond(InvalidMessageError('No token data provided by #setAuthToken event'))

    def _on_remove_auth_token(self, data, respond):
        old, self._stored_token = self._stored_token, None
        self._emitter.emit('removeAuthToken', old)
        self._change_to_unauthenticated()
        respond()

    def _on_server_disconnect(self, data, respond):
        self._close(*server_disconnect(data))

    # -- authentication ----------------------------------------------------------

    def _change_to_authenticated(self, signed):
        change = enter_authenticated(self, signed)
        if change is not None:
            if not self._preparing_subscriptions:
                self._process_pending_subscriptions()
            self._emitter.emit('authStateChange', change)
        self._emitter.emit('authenticate', signed)

    def _change_to_unauthenticated(self):
        left = enter_unauthenticated(self)
        if left is not None:
            self._emitter.emit('authStateChange', left[0])
            self._emitter.emit('deauthenticate', left[1])

    def authenticate(self, signed_token, callback=None):
        """Send ``#authenticate``; ``callback(err, {isAuthenticated, authError})``."""
        def done(err, status):
            status, new_state = authenticate_outcome(err, status, self.auth_state)
            if not err:
                self._stored_token = signed_token
            if new_state == AUTHENTICATED:
                self._change_to_authenticated(signed_token)
            elif new_state == UNAUTHENTICATED:
                self._change_to_unauthenticated()
            if callback is not None:
                callback(err, status)
        self.emit('#authenticate', signed_token, done)

    def deauthenticate(self, callback=None):
        """Forget the token, tell the server (``#removeAuthToken``) and go unauthenticated."""
        old, self._stored_token = self._stored_token, None
        self._emitter.emit('removeAuthToken', old)
        if self.state != CLOSED:
            self.emit('#removeAuthToken')
        self._change_to_unauthenticated()
        if callback is not None:
            callback(None)

    # -- channels ----------------------------------------------------------------

    def _decorate(self, name):
        return decorate(self.channel_prefix, name)

    def _undecorate(self, name):
        return undecorate(self.channel_prefix, name)

    def subscribe(self, channel, wait_for_auth=None, data=None, batch=None, priority=None):
        """The channel, subscribing to it (pending until the server agrees)."""
        chan = self._channels.get(channel)
        if chan is None:
            chan = self._channels[channel] = ClientChannel(channel, self, wait_for_auth, data,
                                                           batch, priority)
        else:
            chan.set_options(wait_for_auth, data, batch, priority)
        if chan.state == UNSUBSCRIBED:
            chan.state = PENDING
            self._try_subscribe(chan)
        return chan

    def _try_subscribe(self, channel):
        allowed = not channel.wait_for_auth or self.auth_state == AUTHENTICATED
        if self.state != OPEN or self._preparing_subscriptions or \
                channel.pending_cid is not None or not allowed:
            return
        options = subscribe_data(self._decorate(channel.name), channel.wait_for_auth, channel.data,
                                 channel.position, channel.batch)
        call = _Call('#subscribe', options,
                     lambda err, _: self._on_subscribe_answer(channel, options, err))
        channel.pending_cid = self._send_call(call, channel.batch)
        self._emitter.emit('subscribeRequest', channel.name, options)

    def _on_subscribe_answer(self, channel, options, err):
        if is_error_named(err, 'BadConnectionError'):
            return  # stays pending, resent on reconnect; no subscribeFail (B-120, docs/behaviours-coverage.md)
        channel.pending_cid = None
        if err:
            self._trigger_subscribe_fail(err, channel)
        elif channel.state != SUBSCRIBED:
            old, channel.state = channel.state, SUBSCRIBED
            change = subscribe_change(channel.name, old, SUBSCRIBED, options)
            channel.emit('subscribeStateChange', change)
            channel.emit('subscribe', channel.name)
            self._emitter.emit('subscribeStateChange', change)
            self._emitter.emit('subscribe', channel.name)

    def _trigger_subscribe_fail(self, err, channel):
        allowed = not channel.wait_for_auth or self.auth_state == AUTHENTICATED
        if channel.state != UNSUBSCRIBED and allowed:
            channel.state = UNSUBSCRIBED
            channel.emit('subscribeFail', err, channel.name)
            self._emitter.emit('subscribeFail', err, channel.name)

    def _cancel_pending_subscribe(self, channel):
        if channel.pending_cid is not None:
            self._calls.pop(channel.pending_cid)
            channel.pending_cid = None

    def _trigger_unsubscribe(self, channel, new_state=UNSUBSCRIBED):
        old, channel.state = channel.state, new_state
        self._cancel_pending_subscribe(channel)
        if old == SUBSCRIBED:
            change = subscribe_change(channel.name, old, new_state)
            channel.emit('subscribeStateChange', change)
            channel.emit('unsubscribe', channel.name)
            self._emitter.emit('subscribeStateChange', change)
            self._emitter.emit('unsubscribe', channel.name)

    def unsubscribe(self, channel):
        """Leave ``channel``: ``unsubscribe`` event now, ``#unsubscribe`` (no cid) if open."""
        chan = self._channels.get(channel)
        if chan is None or chan.state == UNSUBSCRIBED:
            return
        chan.position = None
        self._trigger_unsubscribe(chan)
        if self.state == OPEN:
            self._send_packet(event_packet('#unsubscribe', self._decorate(channel)), chan.batch)

    def _suspend_subscriptions(self):
        for channel in list(self._channels.values()):
            pending = channel.state in (SUBSCRIBED, PENDING)
            self._trigger_unsubscribe(channel, PENDING if pending else UNSUBSCRIBED)

    def _process_pending_subscriptions(self):
        self._preparing_subscriptions = False
        pending = [c for c in self._channels.values() if c.state == PENDING]
        pending.sort(key=lambda c: -c.priority)
        for channel in pending:
            self._try_subscribe(channel)

    def channel(self, name, wait_for_auth=False, data=None, batch=False, priority=None):
        """The channel object for ``name`` (created unsubscribed if new)."""
        chan = self._channels.get(name)
        if chan is None:
            chan = self._channels[name] = ClientChannel(name, self, wait_for_auth, data, batch,
                                                        priority)
        return chan

    def destroy_channel(self, name):
        """Unwatch, unsubscribe and forget ``name`` (nothing happens for an unknown name)."""
        chan = self._channels.get(name)
        if chan is not None:
            chan.unwatch()
            chan.unsubscribe()
            del self._channels[name]

    def subscriptions(self, include_pending=False):
        """Names of the subscribed channels (and pending ones, with ``include_pending``)."""
        states = (SUBSCRIBED, PENDING) if include_pending else (SUBSCRIBED,)
        return [name for name, chan in self._channels.items() if chan.state in states]

    def is_subscribed(self, channel, include_pending=False):
        """True when ``channel`` is subscribed (or pending, with ``include_pending``)."""
        chan = self._channels.get(channel)
        states = (SUBSCRIBED, PENDING) if include_pending else (SUBSCRIBED,)
        return chan is not None and chan.state in states

    def watch(self, channel, fn):
        """Call ``fn(data)`` for every message published to ``channel``."""
        if not callable(fn):
            raise InvalidArgumentsError('No handler function was provided')
        self._channel_emitter.on(channel, fn)

    def unwatch(self, channel, fn=None):
        """Remove one watcher of ``channel``, or all."""
        self._channel_emitter.off(channel, fn)

    def watchers(self, channel):
        """The watchers of ``channel``."""
        return self._channel_emitter.listeners(channel)

    # -- utilities -----------------------------------------------------------------

    @staticmethod
    def encode_base64(text):
        """``text`` (UTF-8) as base64 (B-130, docs/behaviours-coverage.md)."""
        return base64.b64encode(text.encode('utf-8')).decode('ascii')

    @staticmethod
    def decode_base64(text):
        """The text encoded by :meth:`encode_base64`."""
        return base64.b64decode(text).decode('utf-8')

    def wait_for(self, state_or_event, timeout=5.0):
        """Block until ``state`` is reached (``'open'``, ...) or the next emission of an event.

        Returns the state, or the event's arguments as a tuple; TimeoutError after ``timeout``.
        Register before the event can fire: an event emitted earlier is not seen.
        """
        result = AsyncResult()
        if state_or_event in STATES:
            if self.state == state_or_event:
                return state_or_event
            events = ('connecting', 'connect', 'close')

            def listener(*args):
                if self.state == state_or_event:
                    result.set(state_or_event)
        else:
            events = (state_or_event,)

            def listener(*args):
                result.set(args)
        for event in events:
            self._emitter.on(event, listener)
        try:
            return result.get(timeout=timeout)
        except gevent.Timeout:
            raise TimeoutError('Timed out waiting for %r' % (state_or_event,)) from None
        finally:
            for event in events:
                self._emitter.off(event, listener)

    def __repr__(self):
        return '<SCClientSocket %s %s>' % (self.uri, self.state)
