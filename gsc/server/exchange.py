"""The exchange of a worker: channels, their local subscribers, and the engine below.

Sockets subscribe through :meth:`Exchange.subscribe_socket`; server code through
:meth:`Exchange.subscribe`, which returns an :class:`SCChannel`.  The engine is told
about a channel on its first local subscriber and released after its last.  Each
message from the engine is encoded once as a ``#publish`` frame for every socket of
this worker (per socket only when a publishOut middleware is registered).

While no fan-out is in progress, a message for at most ``SLICE_SOCKETS`` sockets is written
at once, as it arrives.  A bigger one goes to the worker's one fan-out queue, written by one
greenlet in slices of about ``SLICE_SOCKETS`` sends with a turn of the event loop between two
slices, so that the other clients are served meanwhile.  Every later message waits in the same
queue until it is empty, so each socket receives the messages in the order they came; a socket
that leaves a channel (or closes) mid-fan-out gets none of that channel's messages after it
left.  Consecutive queued messages of one channel are written together, one send per socket.

A message of a channel with history comes with its position ``(offset, epoch)``: its
``#publish`` packet carries ``offset`` and ``epoch`` beside ``channel`` and ``data`` (with
``publishOffsets`` the data itself is wrapped as ``{data, offset, epoch}``), as a
:data:`HistoryFrame`, so that a socket recovering the channel can hold it and drop what it
already wrote (docs/history.md).
"""

import logging
from collections import deque, namedtuple

import gevent
from gevent import get_hub, getcurrent
from gevent.event import Event

from ..core.emitter import EventEmitter
from ..errors import BrokerError, InvalidArgumentsError
from ..core.history import HistoryRules
from ..core.middleware import MIDDLEWARE_PUBLISH_OUT, Request
from ..core.presence import PresenceRules
from ..core.protocol import UNDEFINED, defined, none_if_undefined
from ..transport import prepare_frame, yield_to_loop
from .exchange_presence import ExchangePresence
from .exchange_store import KeyValueStore

log = logging.getLogger(__name__)

# Sockets written between two turns of the event loop. Measured: a socket costs 4.5 us of CPU
# (its write, then its send when the loop flushes; ~11 us of wall time while 3,100 subscribers
# read), a turn of the loop ~20 us, so a slice holds the loop 0.3-0.7 ms (128 sockets: the rpc
# p99 of other clients doubled during a fan-out) and the turns cost ~7 % of a fan-out's CPU.
SLICE_SOCKETS = 64
# One more message in the same send costs about 1/MESSAGES_PER_SEND of a send (~0.25 us of
# ~3.5 us), so a slice of a group of messages has fewer sockets (see slice_size).
MESSAGES_PER_SEND = 16
# Queued messages of one channel written to each socket of a slice together (one send each).
GROUP_MESSAGES = 64
# Messages waiting in the fan-out queue past which the engine's reader waits for room: the
# backpressure that writing every message at once used to give.
MAX_QUEUED_MESSAGES = 32

PENDING = 'pending'
SUBSCRIBED = 'subscribed'
UNSUBSCRIBED = 'unsubscribed'

HistoryFrame = namedtuple('HistoryFrame', 'payload frame channel offset epoch')
"""A prepared ``#publish`` frame (what ``transport.send_frame`` takes) of a channel with history,
with the position of its publication."""
Positioned = namedtuple('Positioned', 'data offset epoch')
"""A publication of a channel with history on its way through the publishOut middleware."""


def slice_size(messages):
    """Sockets per slice when each gets ``messages`` messages: about SLICE_SOCKETS sends' worth."""
    return max(1, SLICE_SOCKETS * MESSAGES_PER_SEND // (MESSAGES_PER_SEND - 1 + messages))


def _yield_between_slices():
    """A turn of the event loop (it polls the other sockets), then one more turn of its
    callbacks: libev runs the expired timer before the reads of the same turn, so without it
    the answers to what was read would be sent after the next slice's sends."""
    yield_to_loop()
    gevent.sleep(0)


class SCChannel(EventEmitter):
    """A channel as server code sees it: ``name``, ``state``, watchers, events
    ``subscribe(name)``, ``subscribeFail(err, name)``, ``unsubscribe(name)``."""

    PENDING = PENDING
    SUBSCRIBED = SUBSCRIBED
    UNSUBSCRIBED = UNSUBSCRIBED

    def __init__(self, name, exchange, options=None):
        EventEmitter.__init__(self)
        self.name = name
        self.exchange = exchange
        self.client = exchange
        self.state = UNSUBSCRIBED
        self.handlers = []
        self.set_options(options)

    def set_options(self, options=None):
        """``waitForAuth``, ``batch`` and ``data`` of the channel."""
        self.options = dict(options or {})
        self.wait_for_auth = bool(self.options.get('waitForAuth'))
        self.batch = bool(self.options.get('batch'))
        self.data = self.options.get('data')

    def get_state(self):
        """``state``."""
        return self.state

    def subscribe(self, options=None):
        """Subscribe this worker to the channel."""
        if options is not None:
            self.set_options(options)
        self.exchange.subscribe(self.name)

    def unsubscribe(self):
        """Stop this worker's own subscription."""
        self.exchange.unsubscribe(self.name)

    def is_subscribed(self, include_pending=False):
        """True when subscribed (or pending, with ``include_pending``)."""
        return self.state == SUBSCRIBED or (include_pending and self.state == PENDING)

    def publish(self, data=UNDEFINED, callback=None):
        """Publish ``data`` to the channel."""
        self.exchange.publish(self.name, data, callback)

    def watch(self, handler):
        """Call ``handler(data)`` for every message while subscribed."""
        self.handlers.append(handler)

    def unwatch(self, handler=None):
        """Remove one watcher, or all."""
        if handler is None:
            self.handlers.clear()
        else:
            self.handlers[:] = [h for h in self.handlers if h != handler]

    def watchers(self):
        """The watchers (a copy)."""
        return list(self.handlers)

    def destroy(self):
        """Unwatch, unsubscribe and forget the channel."""
        self.exchange.destroy_channel(self.name)


class Exchange(KeyValueStore, ExchangePresence, EventEmitter):
    """Pub/sub of one worker over an engine; the key/value API when the engine has one."""

    def __init__(self, server, engine, presence_rules=None):
        EventEmitter.__init__(self)
        self.server = server
        self.engine = engine
        self.presence_rules = presence_rules or PresenceRules()
        self.worker_id = None   # the ``worker`` of this worker's presence members
        self._joined = {}       # presence channel -> ids of the sockets whose join was sent
        self._presence_listeners = {}  # events channel -> {socket id: socket} asking for #join/#leave
        self._sockets = {}      # channel -> {socket id: socket}
        self._channels = {}     # channel -> SCChannel of server code
        self._engine_state = {}  # channel -> PENDING | SUBSCRIBED at the engine
        self._waiters = {}      # channel -> callbacks waiting for the engine subscription
        self._fanout = deque()  # (channel, payload, through middleware) waiting to be written
        self._fanout_writer = None  # the greenlet writing the fan-out queue
        self._room = Event()    # set while the fan-out queue has room
        self._room.set()
        self.history_rules = getattr(engine, 'history_rules', None) or HistoryRules()

    def start(self, on_ready):
        """Start the engine; ``on_ready()`` once it can carry messages; its warnings become
        server ``warning`` events; a gap it reports reaches the channel's sockets (:meth:`report_gap`)."""
        self.engine.on_gap = self.report_gap
        self.engine.start(self.deliver, on_ready, self.server.emit_warning)

    def close(self):
        """Release the engine; messages still waiting in the fan-out queue are dropped."""
        self.engine.close()
        self._fanout.clear()
        if self._fanout_writer is not None:
            self._fanout_writer.kill(block=False)
        self._room.set()

    # -- engine subscriptions (reference counted) ---------------------------------

    def _acquire(self, channel, callback):
        state = self._engine_state.get(channel)
        if state == SUBSCRIBED:
            callback(None)
            return
        self._waiters.setdefault(channel, []).append(callback)
        if state is None:
            self._engine_state[channel] = PENDING
            self.engine.subscribe(channel, lambda err: self._on_engine_subscribed(channel, err))

    def _on_engine_subscribed(self, channel, err):
        waiters = self._waiters.pop(channel, ())
        if err:
            self._engine_state.pop(channel, None)
        elif channel in self._engine_state:
            self._engine_state[channel] = SUBSCRIBED
        for callback in waiters:
            callback(err)

    def _release_if_unused(self, channel):
        if channel in self._sockets or channel in self._presence_listeners or channel in self._joined:
            return
        own = self._channels.get(channel)
        if own is not None and own.state != UNSUBSCRIBED:
            return
        if self._engine_state.pop(channel, None) is not None:
            self.engine.unsubscribe(channel)

    def resubscribe_all(self):
        """Channels this worker needs (the engine reconnected and lost them)."""
        return list(self._engine_state)

    # -- sockets -------------------------------------------------------------------

    def subscribe_socket(self, socket, channel, callback, data=None):
        """Add ``socket`` as a subscriber of ``channel``; ``callback(err)``.  On a presence
        channel the socket joins its members first (``data``: the subscription's data, where
        ``{'joinLeave': True}`` asks for ``#join``/``#leave`` events)."""
        def subscribed(err):
            if not err and socket.channel_subscriptions.get(channel):
                self._sockets.setdefault(channel, {})[socket.id] = socket
            callback(err)
        policy = self.presence_rules.policy(channel)
        if policy is not None:
            join_leave = policy.join_leave and isinstance(data, dict) and data.get('joinLeave') is True
            self._acquire(channel, lambda err: self._join_presence(
                socket, channel, policy, join_leave, err, subscribed))
            return
        self._acquire(channel, subscribed)

    def unsubscribe_socket(self, socket, channel, callback=None):
        """Remove ``socket`` from ``channel``; no message reaches it after this call."""
        if self._joined or self._presence_listeners:
            self._leave_presence(socket, channel)
        sockets = self._sockets.get(channel)
        if sockets is not None:
            sockets.pop(socket.id, None)
            if not sockets:
                del self._sockets[channel]
                self._release_if_unused(channel)
        if callback is not None:
            callback(None)

    # -- delivery --------------------------------------------------------------------

    def deliver(self, channel, data, position=None):
        """A message from the engine: to this worker's subscribed sockets and watchers;
        ``position`` is ``(offset, epoch)`` on a channel with history, else None."""
        listeners = self._presence_listeners.get(channel)
        if listeners:
            self._send_presence_event(channel, data, listeners)
        sockets = self._sockets.get(channel)
        if sockets:
            through_middleware = self.server.middleware.has(MIDDLEWARE_PUBLISH_OUT)
            if through_middleware:
                payload = Positioned(data, *(position or (None, None)))
            elif position is not None:
                payload = self._history_frame(channel, data, *position)
            else:
                payload = self._publish_frame(channel, data)
            if payload is not None:
                if self._fanout_writer is None and len(sockets) <= SLICE_SOCKETS:
                    self._write(channel, payload, through_middleware, list(sockets.values()))
                else:
                    self._queue_fanout(channel, payload, through_middleware)
        self._call_watchers(channel, data)

    def report_gap(self, channel, report):
        """The engine lost publications of the history channel ``channel`` that its history no
        longer holds (a restart of its owner): each subscribed socket gets ``#recovery`` with
        ``report`` (``recovered`` False), so that its app reloads (docs/history.md)."""
        for socket in list(self._sockets.get(channel, {}).values()):
            socket.emit('#recovery', report)

    def _prepare(self, packet):
        """The frame of ``packet``, encoded now (server code may change its data later), or
        None when it cannot be encoded (a warning)."""
        try:
            return prepare_frame(self.server.codec.encode(packet))
        except ValueError as exc:
            self.server.emit_warning(exc)
            return None

    def _publish_frame(self, channel, data):
        """The ``#publish`` frame of ``data`` (None when it cannot be encoded: a warning)."""
        return self._prepare({'event': '#publish', 'data': defined(channel=channel, data=data)})

    def _history_frame(self, channel, data, offset, epoch):
        """The :data:`HistoryFrame` of a publication (None when it cannot be encoded: a warning)."""
        frame = self._prepare(self.history_packet(channel, data, offset, epoch))
        return None if frame is None else HistoryFrame(*frame, channel, offset, epoch)

    def history_packet(self, channel, data, offset, epoch):
        """The ``#publish`` packet of a publication of a channel with history."""
        policy = self.history_rules.policy(channel)
        if policy is not None and policy.publish_offsets:
            data = defined(data=data, offset=offset, epoch=epoch)
        return {'event': '#publish', 'data': defined(channel=channel, data=data, offset=offset, epoch=epoch)}

    def replay(self, socket, channel, publications, epoch):
        """Write ``publications`` (``[{'offset', 'data'?}]`` of ``epoch``: no ``data`` for a
        publication without data) to ``socket`` as live ones are written: through the
        publishOut middleware when there is one."""
        through_middleware = self.server.middleware.has(MIDDLEWARE_PUBLISH_OUT)
        for publication in publications:
            offset, data = publication['offset'], publication.get('data', UNDEFINED)
            if through_middleware:
                self._deliver_through_middleware(socket, channel, Positioned(data, offset, epoch))
            else:
                frame = self._history_frame(channel, data, offset, epoch)
                if frame is not None:
                    socket.send_publish_frame(frame)

    def _call_watchers(self, channel, data):
        own = self._channels.get(channel)
        if own is not None and own.state == SUBSCRIBED:
            for handler in tuple(own.handlers):
                try:
                    handler(none_if_undefined(data))
                except Exception as exc:
                    log.exception('a watcher of channel %r raised', channel)
                    self.server.emit_warning(exc)

    def _write(self, channel, payload, through_middleware, sockets):
        payloads = (payload,)
        for socket in sockets:
            self._write_one(channel, payloads, through_middleware, socket)

    def _queue_fanout(self, channel, payload, through_middleware):
        """Queue a message behind the others; the engine's reader waits while the queue is full
        (never the hub, the writer itself, or a publishOut middleware, which may wait on it)."""
        self._fanout.append((channel, payload, through_middleware))
        if self._fanout_writer is None:
            self._fanout_writer = gevent.spawn(self._write_fanout)
        if len(self._fanout) >= MAX_QUEUED_MESSAGES:
            self._room.clear()
            current = getcurrent()
            if not through_middleware and current is not self._fanout_writer and \
                    current is not get_hub():
                self._room.wait()

    def _write_fanout(self):
        """Write the fan-out queue until it is empty, a group of messages at a time."""
        try:
            while self._fanout:
                channel, payloads, through_middleware = self._next_group()
                self._write_in_slices(channel, payloads, through_middleware)
        finally:
            self._fanout_writer = None
            self._room.set()

    def _next_group(self):
        """The next queued message with the ones of the same channel right behind it."""
        fanout = self._fanout
        channel, payload, through_middleware = fanout.popleft()
        payloads = [payload]
        while fanout and len(payloads) < GROUP_MESSAGES and fanout[0][0] == channel and \
                fanout[0][2] == through_middleware:
            payloads.append(fanout.popleft()[1])
        if len(fanout) < MAX_QUEUED_MESSAGES:
            self._room.set()
        return channel, payloads, through_middleware

    def _write_in_slices(self, channel, payloads, through_middleware):
        """Every message of ``payloads`` to each subscriber of ``channel``, a slice of sockets
        between two turns of the loop; a socket that left meanwhile is skipped."""
        sockets = self._sockets.get(channel)
        if not sockets:
            return
        targets = list(sockets.items())
        size = slice_size(len(payloads))
        for start in range(0, len(targets), size):
            if start:
                _yield_between_slices()
                sockets = self._sockets.get(channel)
                if not sockets:
                    return
            for socket_id, socket in targets[start:start + size]:
                if sockets.get(socket_id) is socket:
                    self._write_one(channel, payloads, through_middleware, socket)

    def _write_one(self, channel, payloads, through_middleware, socket):
        try:
            for payload in payloads:
                if through_middleware:
                    self._deliver_through_middleware(socket, channel, payload)
                else:
                    socket.send_publish_frame(payload)
        except Exception as exc:
            log.exception('writing a message of channel %r to socket %s failed', channel, socket.id)
            self.server.emit_warning(exc)

    def _deliver_through_middleware(self, socket, channel, positioned):
        data = positioned.data
        req = Request(socket=socket, channel=channel, data=none_if_undefined(data))

        def done(err, _extra):
            if err or not socket.channel_subscriptions.get(channel):
                return
            out = UNDEFINED if data is UNDEFINED and req.data is None else req.data
            if positioned.offset is None:
                socket.send_object({'event': '#publish', 'data': defined(channel=channel, data=out)})
                return
            frame = self._history_frame(channel, out, positioned.offset, positioned.epoch)
            if frame is not None:
                socket.send_publish_frame(frame)
        self.server.middleware.run(MIDDLEWARE_PUBLISH_OUT, req, done)

    # -- the server-code API ------------------------------------------------------------

    def publish(self, channel, data=UNDEFINED, callback=None):
        """Publish ``data`` to every subscriber of ``channel`` on every worker; ``callback(err)``.
        Without ``data`` the subscribers get a publication without data (JavaScript's
        ``undefined``), as ``None`` gives them ``null``."""
        if not isinstance(channel, str):
            err = InvalidArgumentsError('The channel name must be a string, not %r' % (channel,))
            if callback is None:
                raise err
            callback(err)
            return
        self.server.publishes += 1
        self.engine.publish(channel, data, callback)

    def channel(self, name, options=None):
        """The :class:`SCChannel` named ``name`` (created unsubscribed if new)."""
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = SCChannel(name, self, options)
        return channel

    def subscribe(self, name, options=None):
        """Subscribe this worker to ``name``; returns its :class:`SCChannel`."""
        channel = self.channel(name, options)
        if channel.state == UNSUBSCRIBED:
            channel.state = PENDING

            def subscribed(err):
                if channel.state != PENDING:
                    return
                if err:
                    channel.state = UNSUBSCRIBED
                    channel.emit('subscribeFail', err, name)
                    self.emit('subscribeFail', err, name)
                    self._release_if_unused(name)
                else:
                    channel.state = SUBSCRIBED
                    channel.emit('subscribe', name)
                    self.emit('subscribe', name)
            self._acquire(name, subscribed)
        return channel

    def unsubscribe(self, name):
        """End this worker's own subscription to ``name``."""
        channel = self._channels.get(name)
        if channel is None or channel.state == UNSUBSCRIBED:
            return
        was_subscribed = channel.state == SUBSCRIBED
        channel.state = UNSUBSCRIBED
        if was_subscribed:
            channel.emit('unsubscribe', name)
            self.emit('unsubscribe', name)
        self._release_if_unused(name)

    def destroy_channel(self, name):
        """Unwatch, unsubscribe and forget ``name``."""
        channel = self._channels.get(name)
        if channel is not None:
            channel.unwatch()
            self.unsubscribe(name)
            del self._channels[name]

    def subscriptions(self, include_pending=False):
        """Channels this worker's own code subscribed to."""
        return [name for name, ch in self._channels.items() if ch.is_subscribed(include_pending)]

    def is_subscribed(self, name, include_pending=False):
        """True when this worker's own code is subscribed to ``name``."""
        channel = self._channels.get(name)
        return channel is not None and channel.is_subscribed(include_pending)

    def watch(self, name, handler):
        """Call ``handler(data)`` for messages of ``name`` (while subscribed)."""
        self.channel(name).watch(handler)

    def unwatch(self, name, handler=None):
        """Remove a watcher (or all) of ``name``."""
        channel = self._channels.get(name)
        if channel is not None:
            channel.unwatch(handler)

    def watchers(self, name):
        """The watchers of ``name``."""
        channel = self._channels.get(name)
        return channel.watchers() if channel is not None else []

    def history(self, channel, since=None, epoch=None, limit=None, callback=None):
        """The history of ``channel`` (docs/history.md): ``{'epoch', 'offset', 'publications':
        [{'offset', 'data'}], 'recovered'}``, publications after ``since`` (seen in ``epoch``) or
        the last ``limit``; ``callback(err, result)``, or block and return it."""
        def start(done):
            if getattr(self.engine, 'history', None) is None:
                done(BrokerError('The %s engine keeps no channel history' % type(self.engine).__name__))
            else:
                self.engine.history(channel, since, epoch, limit, done)
        return self._call(start, callback)

    def history_policy(self, channel):
        """The :class:`gsc.core.history.HistoryPolicy` of ``channel``, or None."""
        return self.history_rules.policy(channel)
