"""An asyncio client of the SocketCluster protocol v1 (``gsc.aio``), for asyncio apps.

It speaks the wire of docs/protocol.md over :func:`websockets.asyncio.client.connect`, with
the packets of :mod:`gsc.core.protocol` and the rules of :mod:`gsc.core.client_state`, the
same as the gevent client :mod:`gsc.client`: the ``#handshake`` with the stored token, acks
as awaitables, the ``#1``/``#2`` ping with the server's ``pingTimeout``, the auth token kept
across reconnects, socketcluster-client's reconnect back-off, channels that re-subscribe
after a reconnect and, on a history channel, recover what they missed (docs/history.md).

Bounds: a frame is at most ``max_payload`` bytes (1 MiB by default; a larger one closes the
connection with 1009); every call waits at most ``ack_timeout``; an emit made while the
client is not open waits for the connection at most ``ack_timeout`` too, then is dropped
with a log line; each channel iterator holds at most ``queue_size`` publications: when a
consumer falls behind, the oldest publication is dropped and a warning logged (the
connection never waits for a slow iterator, so one slow consumer cannot stall the others).

Handlers (``on``, ``watch``) may be plain functions or coroutine functions; a coroutine
runs as its own task, so it may await this client's calls.
"""

import asyncio
import inspect
import logging
import weakref
from collections import deque

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI, ProtocolError

from .core import codec
from .core.checks import is_int
from .core.client_state import (LOCAL_EVENTS, PENDING, SUBSCRIBED, UNSUBSCRIBED,
                                authenticate_outcome, bad_connection, client_uri, decorate,
                                enter_authenticated, enter_unauthenticated, error_string,
                                handshake_close_code, server_disconnect,
                                handshake_status, is_error_named, ping_timeout,
                                publication_position, reconnect_delay, reconnect_options,
                                reconnects_after, recovered_position, subscribe_change,
                                subscribe_data, undecorate)
from .core.emitter import EventEmitter
from .core.protocol import (AUTHENTICATED, CLOSED, CONNECTING, OPEN, UNAUTHENTICATED, UNDEFINED,
                            CallTable, Event, Ping, Responder, Response, defined, event_packet,
                            none_if_undefined, parse_frame)
from .errors import (CloseCode, InvalidActionError, InvalidArgumentsError, InvalidMessageError,
                     SCError, TimeoutError, close_error, hydrate)

__all__ = ['create', 'Client', 'Channel', 'PENDING', 'SUBSCRIBED', 'UNSUBSCRIBED']

log = logging.getLogger(__name__)

DEFAULT_MAX_PAYLOAD = 1024 * 1024
DEFAULT_QUEUE_SIZE = 1000
DROP_WARNING_EVERY = 1000
_END = object()


def create(url=None, **options):
    """A new :class:`Client` of ``url`` (``ws://host:port/socketcluster/``), or of the
    ``hostname``, ``port``, ``path``, ``secure`` and ``query`` options; it connects on the
    first ``await client.connect()`` (or the first call)."""
    return Client(url, **options)


def _settle(future, err, value):
    """Resolve ``future`` with a call's answer ``(err, data)`` (a server may send both)."""
    if not future.done():
        future.set_result((err, value))


class _Inbox:
    """The bounded queue of one channel iterator: the oldest item goes when it is full."""

    __slots__ = ('items', 'size', 'dropped', 'closed', 'waiter', 'channel', '__weakref__')

    def __init__(self, channel, size):
        self.channel = channel
        self.items = deque()
        self.size = size
        self.dropped = 0
        self.closed = False
        self.waiter = None

    def put(self, item):
        if len(self.items) >= self.size:
            self.items.popleft()
            self.dropped += 1
            if self.dropped % DROP_WARNING_EVERY == 1:
                log.warning('gsc.aio: an iterator of channel %r is %d publications behind; '
                            '%d dropped so far (oldest first)', self.channel, self.size, self.dropped)
        self.items.append(item)
        self._wake()

    def close(self):
        self.closed = True
        self._wake()

    def _wake(self):
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def get(self):
        """The next item; ``_END`` once closed and empty."""
        while not self.items:
            if self.closed:
                return _END
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return self.items.popleft()


class Channel:
    """A channel of an asyncio :class:`Client`.

    ``state`` is pending, subscribed or unsubscribed; ``position`` is ``(offset, epoch)`` of
    the last publication received on a channel with history (None before one).  Events
    (``on``): ``subscribe(name)``, ``subscribeFail(err, name)``, ``unsubscribe(name)``,
    ``kickOut(message, name)``, ``subscribeStateChange(change)``, ``recovery(result)``.
    Publications reach every watcher (``watch``) and every iterator (``async for message
    in channel``, or :meth:`messages`); an iterator ends when the channel is unsubscribed
    (by :meth:`unsubscribe`, a ``kickOut`` or a failed subscribe) and lives on across
    reconnects.
    """

    def __init__(self, name, client, data=None, wait_for_auth=False):
        self.name = name
        self.client = client
        self.state = UNSUBSCRIBED
        self.data = data
        self.wait_for_auth = bool(wait_for_auth)
        self.position = None
        self.pending_cid = None
        self._emitter = EventEmitter()
        self._watchers = []
        self._inboxes = weakref.WeakSet()
        self._waiters = []

    def on(self, event, handler):
        """Call ``handler`` on every ``event`` of this channel; returns ``handler``."""
        return self._emitter.on(event, handler)

    def off(self, event=None, handler=None):
        """Remove one handler, every handler of ``event``, or every handler."""
        self._emitter.off(event, handler)

    def watch(self, fn):
        """Call ``fn(data)`` (a function or a coroutine function) for every publication."""
        if not callable(fn):
            raise InvalidArgumentsError('No handler function was provided')
        self._watchers.append(fn)

    def unwatch(self, fn=None):
        """Remove one watcher, or all."""
        self._watchers = [w for w in self._watchers if fn is not None and w != fn]

    def watchers(self):
        """The watchers of this channel (a copy)."""
        return list(self._watchers)

    def messages(self, queue_size=None):
        """An async iterator of the publications from now on, holding at most ``queue_size``
        of them (the client's ``queue_size`` by default; the oldest dropped past it)."""
        inbox = _Inbox(self.name, queue_size or self.client.queue_size)
        self._inboxes.add(inbox)
        return self._iterate(inbox)

    def __aiter__(self):
        return self.messages()

    async def _iterate(self, inbox):
        try:
            while True:
                item = await inbox.get()
                if item is _END:
                    return
                yield item
        finally:
            self._inboxes.discard(inbox)

    def is_subscribed(self, include_pending=False):
        """True when subscribed (or pending, with ``include_pending``)."""
        return self.state == SUBSCRIBED or (include_pending and self.state == PENDING)

    async def publish(self, data=UNDEFINED):
        """Publish ``data`` to this channel; the server's ack data."""
        return await self.client.publish(self.name, data)

    def unsubscribe(self):
        """Unsubscribe from this channel (its iterators end)."""
        self.client.unsubscribe(self.name)

    def _deliver(self, data):
        for watcher in tuple(self._watchers):
            self.client._run_handler(watcher, (data,))
        for inbox in tuple(self._inboxes):
            inbox.put(data)

    def _emit(self, event, *args):
        for handler in self._emitter.listeners(event):
            self.client._run_handler(handler, args)

    def _settle(self, err):
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                if err is None:
                    waiter.set_result(self)
                else:
                    waiter.set_exception(err)

    def _end_iterations(self):
        for inbox in tuple(self._inboxes):
            inbox.close()

    def __repr__(self):
        return '<gsc.aio.Channel %r %s>' % (self.name, self.state)


class Client:
    """An asyncio SocketCluster client (see the module docstring and :func:`create`).

    Timeouts are in seconds; ``auto_reconnect_options`` takes socketcluster-client's keys in
    milliseconds (``initialDelay``, ``randomness``, ``multiplier``, ``maxDelay``).  ``ssl``
    is an :class:`ssl.SSLContext` for ``wss``.  Local events (``on``): ``connecting``,
    ``connect(status)``, ``connectAbort(code, data)``, ``disconnect(code, data)``,
    ``close(code, data)``, ``error(err)``, ``authenticate(signed_token)``,
    ``deauthenticate(old_signed_token)``, ``authStateChange(change)``, ``subscribe(name)``,
    ``subscribeFail(err, name)``, ``unsubscribe(name)``, ``kickOut(message, name)``,
    ``recovery(name, result)``, ``removeAuthToken(old)``, ``message(frame)``, ``raw(frame)``.
    """

    def __init__(self, url=None, hostname='127.0.0.1', port=8000, path='/socketcluster/',
                 secure=False, query=None, auth_token=None, ack_timeout=10.0,
                 connect_timeout=20.0, auto_reconnect=True, auto_reconnect_options=None,
                 ping_timeout_disabled=False, channel_prefix=None,
                 max_payload=DEFAULT_MAX_PAYLOAD, ssl=None, queue_size=DEFAULT_QUEUE_SIZE):
        self.url = url or client_uri(hostname, port, path, secure, query)
        self.ack_timeout = ack_timeout
        self.connect_timeout = connect_timeout
        self.ping_timeout = ack_timeout  # replaced by the server's pingTimeout at the handshake
        self.ping_timeout_disabled = bool(ping_timeout_disabled)
        self.auto_reconnect = auto_reconnect
        self.auto_reconnect_options = reconnect_options(auto_reconnect_options)
        self.channel_prefix = channel_prefix or None
        self.max_payload = max_payload
        self.ssl = ssl
        self.queue_size = queue_size

        self.id = None
        self.state = CLOSED
        self.active = True
        self.status = None
        self.auth_state = UNAUTHENTICATED
        self.signed_auth_token = None
        self.auth_token = None
        self.connect_attempts = 0
        self.pending_reconnect_timeout = None

        self._stored_token = auth_token
        self._emitter = EventEmitter()
        self._channels = {}
        self._calls = CallTable()
        self._ws = None
        self._link = None  # the current attempt: a future of its handshake status
        self._task = None
        self._reconnect = None
        self._ping_deadline = None
        self._tasks = set()
        self._private = {
            '#publish': self._on_publish, '#kickOut': self._on_kick_out,
            '#setAuthToken': self._on_set_auth_token, '#removeAuthToken': self._on_remove_auth_token,
            '#disconnect': self._on_server_disconnect, '#recovery': self._on_recovery,
        }

    async def __aenter__(self):
        await self.connect()
        return self

    async def __aexit__(self, *exc_info):
        await self.destroy()

    # -- events ----------------------------------------------------------------

    def on(self, event, handler):
        """Call ``handler`` on every local ``event``, or on every server emit of that name:
        ``handler(data)``, whose return value (awaited for a coroutine) answers a server
        call, and whose exception answers it with that error.  With several handlers of a
        server event, the first registered answers.  Returns ``handler``."""
        return self._emitter.on(event, handler)

    def once(self, event, handler):
        """Call ``handler`` on the next ``event`` only."""
        return self._emitter.once(event, handler)

    def off(self, event=None, handler=None):
        """Remove one handler, every handler of ``event``, or every handler."""
        self._emitter.off(event, handler)

    async def wait_for(self, event, timeout=5.0):
        """The arguments (a tuple) of the next emission of the local or server ``event``;
        TimeoutError after ``timeout`` seconds."""
        future = asyncio.get_running_loop().create_future()

        def listener(*args):
            if not future.done():
                future.set_result(args)
        self._emitter.on(event, listener)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError('Timed out waiting for %r' % (event,)) from None
        finally:
            self._emitter.off(event, listener)

    def _emit(self, event, *args):
        for handler in self._emitter.listeners(event):
            self._run_handler(handler, args)

    def _run_handler(self, handler, args, respond=None):
        """Run one handler (a coroutine as a task); ``respond`` answers with its outcome."""
        try:
            result = handler(*args)
        except Exception as exc:
            self._handler_failed(exc, respond)
            return
        if inspect.isawaitable(result):
            self._spawn(self._await_handler(result, respond))
        elif respond is not None:
            respond(None, UNDEFINED if result is None else result)

    async def _await_handler(self, awaitable, respond):
        try:
            result = await awaitable
        except Exception as exc:
            self._handler_failed(exc, respond)
            return
        if respond is not None:
            respond(None, UNDEFINED if result is None else result)

    def _handler_failed(self, exc, respond):
        if respond is not None and respond.cid:
            log.info('gsc.aio: a handler answered call %s with %s', respond.cid, error_string(exc))
            respond(exc)
        else:
            log.exception('gsc.aio: a handler failed')
            self._report_error(exc)

    def _report_error(self, err):
        """Emit ``error`` on the next turn of the loop (logged when nobody listens)."""
        asyncio.get_running_loop().call_soon(self._emit_error, err)

    def _emit_error(self, err):
        if self._emitter.has_listeners('error'):
            self._emit('error', err)
        else:
            log.warning('gsc.aio client error without an error listener: %s', error_string(err))

    def _spawn(self, coroutine):
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- connection lifecycle ------------------------------------------------------

    async def connect(self):
        """Connect (unless open or opening) and wait for the handshake: its status
        ``{id, pingTimeout, isAuthenticated, authError?, authToken}``.  A failed attempt
        raises its error (a SocketProtocolError with its ``code``, or a
        BadConnectionError); with ``auto_reconnect`` the client goes on trying."""
        if self.state == OPEN:
            return self.status
        self._open()
        return await asyncio.shield(self._link)

    def _open(self):
        """Start a connection attempt unless one is open or under way."""
        if not self.active:
            raise InvalidActionError('Cannot connect a destroyed client')
        if self.state != CLOSED:
            return
        self._cancel_reconnect()
        self.state = CONNECTING
        link = self._link = asyncio.get_running_loop().create_future()
        self._task = self._spawn(self._run(link))
        self._emit('connecting')

    async def _run(self, link):
        """One connection attempt: open the WebSocket, handshake, read until it closes."""
        code, reason = CloseCode.ABNORMAL, None
        options = {'max_size': self.max_payload, 'ping_interval': None, 'open_timeout': None}
        if self.ssl is not None:
            options['ssl'] = self.ssl
        try:
            ws = await asyncio.wait_for(ws_connect(self.url, **options), self.connect_timeout)
        except asyncio.TimeoutError:
            code = CloseCode.CONNECT_TIMEOUT
        except (OSError, InvalidHandshake, InvalidURI) as exc:
            log.info('gsc.aio: cannot connect to %s: %s', self.url, exc)
        else:
            if link is not self._link:  # disconnected meanwhile
                await ws.close()
                return
            self._ws = ws
            self._reset_ping_deadline()
            self._send_handshake(link)
            code, reason = await self._read(ws, link)
        if link is self._link:
            self._on_closed(code, reason)

    async def _read(self, ws, link):
        """Handle frames until the connection closes or the ping times out: the close code
        and reason (the reader of a connection this client closed itself returns early)."""
        loop = asyncio.get_running_loop()
        while link is self._link:
            try:
                if self.ping_timeout_disabled:
                    frame = await ws.recv()
                else:
                    frame = await asyncio.wait_for(ws.recv(), self._ping_deadline - loop.time())
            except asyncio.TimeoutError:
                if link is self._link:
                    self._abort(CloseCode.SERVER_PING_TIMEOUT)
                break
            except ConnectionClosed as exc:
                if exc.rcvd is not None:
                    return exc.rcvd.code, exc.rcvd.reason or None
                return CloseCode.ABNORMAL, None
            if link is self._link:
                self._on_frame(ws, frame)
        return CloseCode.ABNORMAL, None

    def _reset_ping_deadline(self):
        self._ping_deadline = asyncio.get_running_loop().time() + self.ping_timeout

    def _send_handshake(self, link):
        token = self._stored_token
        cid = self._calls.next_cid()
        timer = asyncio.get_running_loop().call_later(self.ack_timeout, self._call_timed_out, cid)

        def answered(err, status):
            timer.cancel()
            self._on_handshake(link, token, err, status)
        self._calls.add(cid, '#handshake', answered)
        self._send_packet(event_packet('#handshake', {'authToken': token}, cid))

    def _call_timed_out(self, cid):
        entry = self._calls.pop(cid)
        if entry is not None:
            entry[1](TimeoutError("Event response for '%s' timed out" % entry[0]), None)

    def _on_handshake(self, link, token, err, status):
        if link is not self._link:
            return
        status = handshake_status(status, token)
        if err:
            self._report_error(err)
            self._abort(handshake_close_code(status), error_string(err))
            return
        status = status or {}
        self.state = OPEN
        self.status = status
        self.id = status.get('id')
        self.ping_timeout = ping_timeout(status, self.ping_timeout)
        self._reset_ping_deadline()
        if status.get('isAuthenticated'):
            self._change_to_authenticated(status.get('authToken'))
        else:
            self._change_to_unauthenticated()
        self.connect_attempts = 0
        self._process_pending_subscriptions()
        link.set_result(status)
        self._emit('connect', status)

    def _on_closed(self, code, data):
        """The connection is gone: fail its calls, suspend its channels, maybe reconnect."""
        link, self._link = self._link, None
        self._ws = None
        was_open = self.state == OPEN
        self.state = CLOSED
        self.id = None
        self._cancel_reconnect()
        failure = 'disconnect' if was_open else 'connectAbort'
        for event, finish, _ in self._calls.pop_all():
            finish(bad_connection(event, failure), None)
        err = close_error(code, data)
        if link is not None and not link.done():
            link.set_exception(err or bad_connection('#handshake', failure))
            link.exception()  # retrieved: a waiter of connect() may have gone
        for channel in self._channels.values():
            if channel.state != UNSUBSCRIBED:
                self._trigger_unsubscribe(channel, PENDING)
        initial_delay = reconnects_after(code)
        if self.auto_reconnect and self.active and initial_delay is not False:
            delay = reconnect_delay(self.auto_reconnect_options, self.connect_attempts, initial_delay)
            self.connect_attempts += 1
            self.pending_reconnect_timeout = delay
            self._reconnect = asyncio.get_running_loop().call_later(delay / 1000.0, self._open)
        self._emit('disconnect' if was_open else 'connectAbort', code, data)
        self._emit('close', code, data)
        if err is not None:
            self._report_error(err)

    def _cancel_reconnect(self):
        if self._reconnect is not None:
            self._reconnect.cancel()
        self._reconnect = None
        self.pending_reconnect_timeout = None

    def _abort(self, code, data=None):
        """Report the close with ``code``, then close the WebSocket with it (in a task,
        returned; None when it was not open yet)."""
        ws, task = self._ws, self._task
        self._on_closed(code, data)
        if ws is None:
            if task is not None and task is not asyncio.current_task():
                task.cancel()
            return None
        return self._spawn(self._close_ws(ws, code))

    @staticmethod
    async def _close_ws(ws, code):
        try:
            await ws.close(code)
        except ProtocolError:  # a code that cannot go in a close frame (1005, 1006)
            ws.transport.abort()

    async def disconnect(self, code=CloseCode.NORMAL, data=None):
        """Send ``#disconnect`` {code, data} (when open), close with ``code`` and wait for
        the closing handshake; no reconnect after 1000 (or a code from 4500 up)."""
        if not is_int(code):
            raise InvalidArgumentsError('If specified, the code argument must be a number')
        if self.state == CLOSED:
            self._cancel_reconnect()
            return
        if self.state == OPEN:
            self._send_packet(event_packet('#disconnect', defined(
                code=code, data=UNDEFINED if data is None else data)))
        closing = self._abort(code, data)
        if closing is not None:
            await closing

    async def destroy(self, code=CloseCode.NORMAL, data=None):
        """Disconnect for good: the client never connects again; its handlers' tasks are
        cancelled and its channel iterators end."""
        self.active = False
        await self.disconnect(code, data)
        for channel in self._channels.values():
            channel._end_iterations()
        current = asyncio.current_task()
        pending = [task for task in self._tasks if task is not current]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    # -- sending -------------------------------------------------------------------

    def _send_packet(self, packet):
        """Encode and send one packet (an unencodable one is reported and returned)."""
        try:
            frame = codec.encode(packet)
        except ValueError as exc:
            self._report_error(exc)
            return exc
        self._send_frame(frame)
        return None

    def _send_frame(self, frame):
        """Queue one frame on the open WebSocket; frames leave in the order queued."""
        ws = self._ws
        if ws is not None:
            self._spawn(self._write(ws, frame))

    @staticmethod
    async def _write(ws, frame):
        try:
            await ws.send(frame)
        except ConnectionClosed:
            pass  # the reader reports the close

    async def _until_open(self, event):
        """Connect when closed and wait for the handshake; BadConnectionError if it fails."""
        while self.state != OPEN:
            self._open()
            try:
                await asyncio.shield(self._link)
            except SCError:
                raise bad_connection(event, 'connectAbort') from None

    async def _call(self, event, data, ack=True):
        """``(err, data)``: the answer of a call (``(None, None)`` once sent without ``ack``)."""
        try:
            await self._until_open(event)
        except SCError as exc:
            return exc, None
        if not ack:
            return self._send_packet(event_packet(event, data)), None
        cid = self._calls.next_cid()
        future = asyncio.get_running_loop().create_future()
        self._calls.add(cid, event, lambda err, value: _settle(future, err, value))
        try:
            err = self._send_packet(event_packet(event, data, cid))
            if err is not None:
                return err, None
            return await future
        finally:
            self._calls.pop(cid)

    @staticmethod
    def _check_emittable(event):
        if event in LOCAL_EVENTS:
            raise InvalidActionError(
                'The "%s" event is reserved and cannot be emitted on a client socket' % event)

    async def invoke(self, event, data=UNDEFINED, timeout=None):
        """Emit ``event`` with ``data`` (left out when not given) and wait for the answer:
        its data, or the server's error raised (hydrated: SocketCluster's error classes).

        Connects when closed; TimeoutError after ``timeout`` (``ack_timeout`` by default)
        seconds, BadConnectionError when the connection drops first.
        """
        self._check_emittable(event)
        err, value = await self._request(event, data, timeout)
        if err is not None:
            raise err if isinstance(err, BaseException) else SCError(str(err), data=err)
        return value

    async def _request(self, event, data, timeout=None):
        """``(err, data)`` of a call, with TimeoutError after ``timeout`` seconds
        (``ack_timeout`` by default)."""
        try:
            return await asyncio.wait_for(self._call(event, data),
                                          self.ack_timeout if timeout is None else timeout)
        except asyncio.TimeoutError:
            return TimeoutError("Event response for '%s' timed out" % event), None

    def emit(self, event, data=UNDEFINED):
        """Emit ``event`` without waiting for an answer (no cid).  Sent now when open;
        otherwise connects and sends after the handshake, or drops it (logged) when that
        takes more than ``ack_timeout``."""
        self._check_emittable(event)
        if self.state == OPEN:
            self._send_packet(event_packet(event, data))
        else:
            self._spawn(self._emit_later(event, data))

    async def _emit_later(self, event, data):
        try:
            err, _ = await asyncio.wait_for(self._call(event, data, ack=False), self.ack_timeout)
        except asyncio.TimeoutError:
            err = 'not connected within ack_timeout'
        if err is not None:
            log.info('gsc.aio: emit of %r dropped: %s', event, error_string(err))

    async def publish(self, channel, data=UNDEFINED):
        """Publish ``data`` to ``channel`` through the server (a publication without data when
        left out); the ack data."""
        return await self.invoke('#publish', defined(channel=decorate(self.channel_prefix, channel),
                                                     data=data))

    # -- inbound -------------------------------------------------------------------

    def _on_frame(self, ws, frame):
        self._emit('message', frame)
        for packet in parse_frame(frame):
            if ws is not self._ws:
                return
            kind = type(packet)
            if kind is Ping:
                self._reset_ping_deadline()
                self._send_frame(codec.PONG)
            elif kind is Event:
                self._on_event(packet)
            elif kind is Response:
                entry = self._calls.pop(packet.rid)
                if entry is not None:
                    entry[1](hydrate(packet.error), none_if_undefined(packet.data))
            else:
                self._emit('raw', frame)

    def _on_event(self, packet):
        data = none_if_undefined(packet.data)
        respond = Responder(packet.cid, self._send_packet)
        private = self._private.get(packet.event)
        if private is not None:
            private(data, respond)
        elif packet.event in LOCAL_EVENTS:
            log.info('gsc.aio: ignoring the reserved event %r from the server', packet.event)
        else:
            for index, handler in enumerate(self._emitter.listeners(packet.event)):
                self._run_handler(handler, (data,), respond if index == 0 else None)

    def _channel_of(self, data):
        """The channel a server packet names (``data['channel']``), or None."""
        if isinstance(data, dict):
            return self._channels.get(undecorate(self.channel_prefix, data.get('channel')))
        return None

    def _on_publish(self, data, respond):
        channel = self._channel_of(data)
        if channel is not None and channel.state != UNSUBSCRIBED:
            channel.position = publication_position(data) or channel.position
            channel._deliver(data.get('data'))

    def _on_recovery(self, data, respond):
        """``#recovery``: the channel's ``recovery(result)``, then the client's
        ``recovery(name, result)``."""
        channel = self._channel_of(data)
        if channel is not None:
            channel.position = recovered_position(channel.position, data)
            channel._emit('recovery', data)
            self._emit('recovery', channel.name, data)

    def _on_kick_out(self, data, respond):
        channel = self._channel_of(data)
        if channel is not None:
            message = data.get('message')
            self._emit('kickOut', message, channel.name)
            channel._emit('kickOut', message, channel.name)
            self._trigger_unsubscribe(channel, UNSUBSCRIBED)

    def _on_set_auth_token(self, data, respond):
        token = data.get('token') if isinstance(data, dict) else None
        if not token:
            respond(InvalidMessageError('No token data provided by #setAuthToken event'))
            return
        self._stored_token = token
        self._change_to_authenticated(token)
        respond()

    def _on_remove_auth_token(self, data, respond):
        self._forget_token()
        respond()

    def _on_server_disconnect(self, data, respond):
        self._abort(*server_disconnect(data))

    # -- authentication --------------------------------------------------------------

    def _change_to_authenticated(self, signed):
        change = enter_authenticated(self, signed)
        if change is not None:
            self._process_pending_subscriptions()
            self._emit('authStateChange', change)
        self._emit('authenticate', signed)

    def _change_to_unauthenticated(self):
        left = enter_unauthenticated(self)
        if left is not None:
            change, old_signed = left
            self._emit('authStateChange', change)
            self._emit('deauthenticate', old_signed)

    def _forget_token(self):
        old, self._stored_token = self._stored_token, None
        self._emit('removeAuthToken', old)
        self._change_to_unauthenticated()

    async def authenticate(self, signed_token):
        """Send ``#authenticate`` with a signed token: the status ``{isAuthenticated,
        authError}``.  A refused token raises its error (``AuthTokenInvalidError``, ...,
        the status in its ``status`` attribute) and leaves the client unauthenticated; a
        timeout or a dropped connection raises and keeps the state.  An accepted token is
        kept for the handshakes of later reconnects."""
        err, status = await self._request('#authenticate', signed_token)
        status, new_state = authenticate_outcome(err, status, self.auth_state)
        if err is None:
            self._stored_token = signed_token
        if new_state == AUTHENTICATED:
            self._change_to_authenticated(signed_token)
        elif new_state == UNAUTHENTICATED:
            self._change_to_unauthenticated()
        if err is not None:
            if isinstance(err, SCError):
                err.status = status
            raise err
        return status

    async def deauthenticate(self):
        """Forget the token, tell the server (``#removeAuthToken``) and go unauthenticated."""
        if self.state == OPEN:
            self.emit('#removeAuthToken')
        self._forget_token()

    # -- channels ----------------------------------------------------------------

    def channel(self, name):
        """The channel object of ``name`` (created unsubscribed when new)."""
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = Channel(name, self)
        return channel

    def channels(self):
        """The channel objects of this client, by name (a copy)."""
        return dict(self._channels)

    async def subscribe(self, name, data=None, wait_for_auth=None, timeout=None):
        """The channel ``name``, once the server agreed to the subscription (connecting when
        closed).  ``data`` goes with the ``#subscribe`` (e.g. ``{'history': 20}``);
        ``wait_for_auth`` holds it until the client is authenticated.  Raises the server's
        error when it refuses, TimeoutError after ``timeout`` seconds (``ack_timeout`` by
        default; the channel then stays pending and subscribes when it can)."""
        channel = self.channel(name)
        if data is not None:
            channel.data = data
        if wait_for_auth is not None:
            channel.wait_for_auth = bool(wait_for_auth)
        if channel.state == SUBSCRIBED:
            return channel
        waiter = asyncio.get_running_loop().create_future()
        channel._waiters.append(waiter)
        if channel.state == UNSUBSCRIBED:
            channel.state = PENDING
        if self.state == CLOSED:
            self._open()
        self._try_subscribe(channel)
        try:
            return await asyncio.wait_for(waiter, self.ack_timeout if timeout is None else timeout)
        except asyncio.TimeoutError:
            raise TimeoutError("Subscription to '%s' timed out" % name) from None

    def _try_subscribe(self, channel):
        allowed = not channel.wait_for_auth or self.auth_state == AUTHENTICATED
        if self.state != OPEN or channel.pending_cid is not None or not allowed:
            return
        options = subscribe_data(decorate(self.channel_prefix, channel.name), channel.wait_for_auth,
                                 channel.data, channel.position)
        cid = channel.pending_cid = self._calls.next_cid()
        timer = asyncio.get_running_loop().call_later(self.ack_timeout, self._call_timed_out, cid)

        def answered(err, _data):
            timer.cancel()
            self._on_subscribe_answer(channel, options, err)
        self._calls.add(cid, '#subscribe', answered)
        self._send_packet(event_packet('#subscribe', options, cid))
        self._emit('subscribeRequest', channel.name, options)

    def _on_subscribe_answer(self, channel, options, err):
        if is_error_named(err, 'BadConnectionError'):
            return  # stays pending: subscribes again after the reconnect
        channel.pending_cid = None
        if err:
            if channel.state != UNSUBSCRIBED:
                channel.state = UNSUBSCRIBED
                channel._emit('subscribeFail', err, channel.name)
                self._emit('subscribeFail', err, channel.name)
                channel._end_iterations()
            channel._settle(err)
            return
        if channel.state != SUBSCRIBED:
            self._change_subscription(channel, SUBSCRIBED, 'subscribe', options)
        channel._settle(None)

    def _change_subscription(self, channel, new_state, event, options=None):
        """Move ``channel`` to ``new_state`` and emit ``subscribeStateChange`` and ``event``
        on the channel and on the client."""
        old, channel.state = channel.state, new_state
        change = subscribe_change(channel.name, old, new_state, options)
        for emitter in (channel, self):
            emitter._emit('subscribeStateChange', change)
            emitter._emit(event, channel.name)

    def _trigger_unsubscribe(self, channel, new_state):
        if channel.pending_cid is not None:
            self._calls.pop(channel.pending_cid)
            channel.pending_cid = None
        if channel.state == SUBSCRIBED:
            self._change_subscription(channel, new_state, 'unsubscribe')
        channel.state = new_state
        if new_state == UNSUBSCRIBED:
            channel._end_iterations()

    def _process_pending_subscriptions(self):
        for channel in list(self._channels.values()):
            if channel.state == PENDING:
                self._try_subscribe(channel)

    def unsubscribe(self, name):
        """Leave channel ``name``: ``unsubscribe`` now, ``#unsubscribe`` to the server when
        open; its position is forgotten and its iterators end."""
        channel = self._channels.get(name)
        if channel is None or channel.state == UNSUBSCRIBED:
            return
        channel.position = None
        self._trigger_unsubscribe(channel, UNSUBSCRIBED)
        if self.state == OPEN:
            self._send_packet(event_packet('#unsubscribe', decorate(self.channel_prefix, name)))

    def subscriptions(self, include_pending=False):
        """Names of the subscribed channels (and pending ones, with ``include_pending``)."""
        return [name for name, channel in self._channels.items()
                if channel.is_subscribed(include_pending)]

    def __repr__(self):
        return '<gsc.aio.Client %s %s>' % (self.url, self.state)
