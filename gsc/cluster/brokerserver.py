"""What a broker process serves to the workers: the pub/sub relay and the key/value store.

Each worker holds one connection to every broker, on the broker's unix socket.  The
link is an :class:`gsc.cluster.ipc.Channel` (framed JSON with cid/rid), so commands are events
``{"type": action, "data": fields, "cid": n}`` answered by ``{"rid": n, ...}``, and a
channel message is the event ``{"type": "message", "data": {"channel", "data"}}``.

A connection proves it knows the cluster's secret key before anything else
(:func:`gsc.cluster.ipc.authenticate_peer`: a challenge-response that never sends the key); one
that does not within :func:`gsc.cluster.ipc.auth_timeout` is closed, and one line names the
process behind it (then one summary per 10 s while refusals go on: :mod:`gsc.reporting`).

A channel is subscribed per worker connection; a publish goes to every connection
subscribed to it, in the order the broker received the publishes.  A connection that
closes releases all its subscriptions, so a vanished worker leaves nothing behind.

On a channel with history (``channelHistory``) this broker, the channel's owner, keeps its
publications (:class:`gsc.core.history.HistoryStore`) and stamps each one: the ``message`` event
gains ``offset`` and ``epoch``.  The ``history`` command ``{channel, since, epoch, limit}``
answers the history read of docs/history.md.
"""

import itertools
import logging
import os

import gevent
from gevent import socket as gsocket
from gevent.server import StreamServer

from ..core import kv
from ..core.datamap import DataMap
from ..errors import BrokerError, ResourceLimitError
from ..core.history import HistoryRules, HistoryStore
from .ipc import Channel, LinkAuthError, auth_timeout, authenticate_peer, peer_name
from ..core.middleware import MIDDLEWARE_PUBLISH_IN, MIDDLEWARE_SUBSCRIBE, MiddlewareChains, Request
from ..core.presence import PresenceRules, PresenceTable, events_channel, presence_event
from ..core.protocol import UNDEFINED, defined
from ..reporting import WarningDigest

log = logging.getLogger(__name__)


class WorkerConnection:
    """One worker's link to this broker: ``id``, ``channel`` (the IPC link), ``channels``."""

    __slots__ = ('id', 'channel', 'channels')

    def __init__(self, id_):
        self.id = id_
        self.channel = None
        self.channels = set()


class BrokerServer:
    """The server of one broker.

    ``broker`` is the emitter that gets the events ``subscribe(channel)`` (first
    subscriber), ``unsubscribe(channel)`` (last one gone), ``publish(channel, value)``,
    ``message(data, respond)`` and ``warning(err)``.  Attributes: ``data_map``,
    ``publishes`` (publications relayed), ``subscriptions`` (connection id -> {channel:
    connection}), ``middleware``, ``history`` (the :class:`gsc.core.history.HistoryStore` of the
    channels this broker owns).
    """

    def __init__(self, broker, socket_path, secret_key=None, expiry_accuracy=5000, ack_timeout=10000,
                 history_rules=None):
        self.broker = broker
        self.socket_path = socket_path
        self.secret_key = secret_key
        self.expiry_accuracy = expiry_accuracy
        self.ack_timeout = ack_timeout
        self.data_map = DataMap()
        self.history = HistoryStore(history_rules or HistoryRules())
        self.middleware = MiddlewareChains(lambda err: broker.emit('warning', err),
                                           types=(MIDDLEWARE_SUBSCRIBE, MIDDLEWARE_PUBLISH_IN))
        self.connections = {}
        self.publishes = 0
        self._subscribers = {}  # channel -> {connection id: connection}
        self._ids = itertools.count(1)
        self._server = None
        self._purger = None
        self._refusals = WarningDigest(lambda warning: log.warning('%s', warning))
        self.presence_table = PresenceTable(PresenceRules.from_options(getattr(broker, 'options', None)))

    @property
    def subscriptions(self):
        """connection id -> {channel: connection}."""
        return {conn.id: {name: conn for name in conn.channels} for conn in self.connections.values()}

    @property
    def channel_count(self):
        """How many channels have a subscriber through this broker."""
        return len(self._subscribers)

    def start(self):
        """Listen on ``socket_path`` (a stale socket file is removed first)."""
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        listener = gsocket.socket(gsocket.AF_UNIX, gsocket.SOCK_STREAM)
        listener.bind(self.socket_path)
        listener.listen(128)
        self._server = StreamServer(listener, self._accept)
        self._server.start()
        self._purger = gevent.spawn(self._purge_expired_forever)

    def stop(self):
        """Stop listening and close every worker connection."""
        if self._purger is not None:
            self._purger.kill()
        self._refusals.close()
        if self._server is not None:
            self._server.stop(timeout=1)
        for conn in list(self.connections.values()):
            conn.channel.close('the broker is stopping')
        try:
            os.unlink(self.socket_path)
        except OSError:
            pass

    def _accept(self, sock, _address):
        try:
            authenticate_peer(sock, self.secret_key, auth_timeout(self.ack_timeout))
        except (LinkAuthError, OSError) as exc:
            self._refusals.add(BrokerError('Broker %s closed a connection on %s (%s): %s' % (
                self.broker.id, self.socket_path, peer_name(sock), exc)))
            sock.close()
            return
        conn = WorkerConnection(next(self._ids))
        conn.channel = Channel(sock.detach(), lambda message, respond: self._on_command(conn, message, respond),
                               lambda _channel, _reason: self._on_disconnect(conn),
                               ack_timeout=self.ack_timeout, name='worker connection %d' % conn.id)
        self.connections[conn.id] = conn
        conn.channel.start()

    def _purge_expired_forever(self):
        while True:
            gevent.sleep(self.expiry_accuracy / 1000.0)
            self.data_map.purge_expired()
            self.history.purge_expired()

    # -- commands ---------------------------------------------------------------------

    def _on_command(self, conn, message, respond):
        action = message['type']
        fields = message.get('data')
        if not isinstance(fields, dict):
            fields = {}
        handler = self._handlers.get(action)
        if handler is not None:
            handler(self, conn, fields, respond)
            return
        try:
            value = kv.execute(self.data_map, action, fields)
        except Exception as exc:
            respond(exc)
            return
        if not fields.get('noAck'):
            respond(None, None if value is UNDEFINED else value)

    def _subscribe(self, conn, fields, respond):
        channel = fields.get('channel')
        if not isinstance(channel, str):
            respond(BrokerError('Failed to subscribe - the channel name %r is not a string' % (channel,)))
            return

        def done(err, _extra):
            if err:
                respond(err)
                return
            if conn.id not in self.connections:
                return
            subscribers = self._subscribers.setdefault(channel, {})
            first = not subscribers
            subscribers[conn.id] = conn
            conn.channels.add(channel)
            if first:
                self.broker.emit('subscribe', channel)
            respond(None, {'channel': channel})
        self.middleware.run(MIDDLEWARE_SUBSCRIBE, Request(socket=conn, channel=channel), done)

    def _unsubscribe(self, conn, fields, respond):
        channel = fields.get('channel')
        channels = list(conn.channels) if channel is None else [channel]
        for name in channels:
            self._release(conn, name)
        respond()

    def _release(self, conn, channel):
        conn.channels.discard(channel)
        subscribers = self._subscribers.get(channel)
        if subscribers is not None and subscribers.pop(conn.id, None) is not None and not subscribers:
            del self._subscribers[channel]
            self.broker.emit('unsubscribe', channel)

    def _on_disconnect(self, conn):
        self.connections.pop(conn.id, None)
        for channel in list(conn.channels):
            self._release(conn, channel)
        for channel, socket_id, info in self.presence_table.drop_owner(conn.id):
            self._publish_presence('leave', channel, socket_id, info)

    def _is_subscribed(self, conn, fields, respond):
        respond(None, fields.get('channel') in conn.channels)

    def _publish_command(self, conn, fields, respond):
        channel = fields.get('channel')
        if not isinstance(channel, str):
            respond(BrokerError('Failed to publish - the channel name %r is not a string' % (channel,)))
            return
        command = defined(channel=channel, value=fields.get('value', UNDEFINED))

        def done(err, _extra):
            if err:
                respond(err)
                return
            try:
                self.publish(channel, command.get('value', UNDEFINED))
            except ResourceLimitError as exc:
                respond(BrokerError('Failed to publish to channel %s - %s' % (channel[:100], exc)))
                return
            self.publishes += 1
            value = command.get('value')
            self.broker.emit('publish', channel, value)
            respond(None, value if fields.get('getValue') else None)
        if self.middleware.has(MIDDLEWARE_PUBLISH_IN):
            self.middleware.run(MIDDLEWARE_PUBLISH_IN, Request(socket=conn, channel=channel, command=command), done)
        else:
            done(None, None)

    def _history(self, conn, fields, respond):
        channel = fields.get('channel')
        if not isinstance(channel, str):
            respond(BrokerError('Failed to read history - the channel name %r is not a string' % (channel,)))
            return
        try:
            result = self.history.read(channel, fields.get('since'), fields.get('epoch'), fields.get('limit'))
        except Exception as exc:
            respond(exc)
            return
        respond(None, result)

    def _presence_join(self, conn, fields, respond):
        channel, socket_id = fields.get('channel'), fields.get('socketId')
        if not isinstance(channel, str) or not isinstance(socket_id, str):
            respond(BrokerError('Failed to join a presence - the channel and socketId must be strings'))
            return
        info = fields.get('info') if isinstance(fields.get('info'), dict) else {}
        try:
            new = self.presence_table.join(channel, socket_id, info, conn.id)
        except BrokerError as exc:
            respond(exc)
            return
        if new:
            self._publish_presence('join', channel, socket_id, info)
        respond()

    def _presence_leave(self, conn, fields, respond):
        channel, socket_id = fields.get('channel'), fields.get('socketId')
        info = self.presence_table.leave(channel, socket_id) if isinstance(channel, str) and \
            isinstance(socket_id, str) else None
        if info is not None:
            self._publish_presence('leave', channel, socket_id, info)
        respond()

    def _presence(self, conn, fields, respond):
        channel = fields.get('channel')
        if not isinstance(channel, str):
            respond(BrokerError('Failed to get a presence - the channel name %r is not a string' % (channel,)))
            return
        respond(None, self.presence_table.members(channel))

    def _publish_presence(self, kind, channel, socket_id, info):
        """A member's join or leave to the workers listening on the channel's events."""
        self.publish(events_channel(channel), presence_event(kind, socket_id, info))

    def _send(self, conn, fields, respond):
        if not self.broker.emit('message', fields.get('value'), lambda err=None, data=None: respond(err, data)):
            respond(None, None)

    _handlers = {
        'subscribe': _subscribe,
        'unsubscribe': _unsubscribe,
        'isSubscribed': _is_subscribed,
        'publish': _publish_command,
        'send': _send,
        'history': _history,
        'presenceJoin': _presence_join,
        'presenceLeave': _presence_leave,
        'presence': _presence,
    }

    # -- delivery -----------------------------------------------------------------------

    def publish(self, channel, value):
        """Deliver ``value`` to every worker subscribed to ``channel`` (no ``publish`` event);
        encoded once; kept in the channel's history (with its offset and epoch) when it has one.
        ``ResourceLimitError`` (nothing sent) when the message is larger than a link carries."""
        message = defined(channel=channel, data=value)
        if self.history.rules:
            position = self.history.append(channel, value)
            if position is not None:
                message['offset'], message['epoch'] = position
        subscribers = self._subscribers.get(channel)
        if subscribers:
            conns = list(subscribers.values())
            frame = conns[0].channel.frame({'type': 'message', 'data': message})
            for conn in conns:
                conn.channel.write_frame(frame)
