"""The broker engine: a worker's links to the broker processes of its cluster.

A channel (and a key) belongs to broker ``hash_key(name, brokers)``.  The worker holds
one :class:`BrokerLink` per broker; a link connects to the broker's unix socket, both ends
prove they know the secret key (:func:`gsc.cluster.ipc.prove_to_peer`: the key itself is never
sent, and a process that listens on the socket path without the key is refused), then it
subscribes again to every channel this worker still needs and sends what was queued while
it was away.  When a broker dies its link tries again at once, then backs off from 10 ms
(x1.3 per attempt, up to 1 s, plus up to 50% jitter): a respawned broker listens again
within about 100 ms.  Channel messages published in the gap are lost, and a warning says so,
except on channels with history: there the link reads from the broker what this worker
missed (:class:`gsc.core.history.ChannelPositions`) and delivers it, in order, before the live
publications held meanwhile, and the joinLeave listeners of a presence channel are sent the
joins of the members already there (docs/history.md, docs/presence.md).

What a worker holds for its brokers is bounded in bytes (``maxBrokerQueueBytes``): the
commands queued for every broker that is down, together, and the bytes a connected
link has not written yet.  A command over the bound, or larger than a link carries
(:data:`gsc.cluster.ipc.MAX_FRAME`), fails at once with ``BrokerError``; the link stays up.
"""

import logging
import random
import time

import gevent
from gevent import get_hub
from gevent import socket as gsocket

from ..core import codec, kv
from ..errors import BrokerError, InvalidOptionsError, ResourceLimitError, TimeoutError
from ..core.hasher import hash_key
from .ipc import Channel, LinkAuthError, LinkRefusedError, auth_timeout, prove_to_peer
from ..core.history import ChannelPositions, HistoryRules
from ..core.presence import EVENTS_PREFIX, owner_channel, presence_event
from ..core.protocol import UNDEFINED, defined

log = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE_BYTES = 16 * 1024 * 1024
"""``maxBrokerQueueBytes`` when not set (the same budget as a socket's ``maxOutboundBytes``)."""
ENTRY_OVERHEAD = 1024
"""Bytes counted for each queued command on top of its JSON (its list, timer and callbacks:
about 900 bytes measured with tracemalloc)."""
FRAME_OVERHEAD = 64
"""Bytes a command's frame adds to the JSON of its fields (type, cid, braces)."""
BATCHED_ACTIONS = frozenset(('subscribe', 'unsubscribe', 'publish'))
RECONNECT = {'initialDelay': 10, 'multiplier': 1.3, 'maxDelay': 1000, 'jitter': 0.5}
"""The pauses (ms) between a link's attempts after the first, immediate one; ``jitter`` is the
largest random fraction added to each pause, so the workers of a cluster spread out."""
QUIET_OUTAGE = 1.0
"""Seconds a broker may stay unreachable before a warning says so (a broker killed and
respawned is back well within it)."""


class QueueBudget:
    """The bytes a worker may hold for its brokers (``maxBrokerQueueBytes``), shared by its
    links: ``limit``, ``used``."""

    def __init__(self, limit):
        self.limit = limit
        self.used = 0

    def take(self, size):
        """Count ``size`` more bytes; False (nothing counted) when that would exceed the limit."""
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give_back(self, size):
        """Stop counting ``size`` bytes."""
        self.used -= size


class BrokerLink:
    """The connection of this worker to one broker (sc-broker's client)."""

    def __init__(self, index, socket_path, secret_key, on_message, on_warning, ack_timeout=10000,
                 batch_duration=None, budget=None, on_gap=None):
        self.index = index
        self.budget = budget or QueueBudget(DEFAULT_MAX_QUEUE_BYTES)
        self.batch_duration = batch_duration
        self._batch_timer = None
        self.socket_path = socket_path
        self.secret_key = secret_key
        self.on_message = on_message
        self.on_warning = on_warning
        self.ack_timeout = ack_timeout
        self.channels = set()
        self.members = {}  # (channel, socket id) -> info: the presence joins sent again on a reconnect
        self.positions = ChannelPositions(on_message, on_gap or (lambda channel, report: None))
        self._announced = {}  # events channel -> socket ids whose join arrived since the reconnect
        self.state = 'disconnected'
        self.losses = 0
        self.channel = None
        self._queue = {}  # id(entry) -> [action, JSON bytes, callback, timer, size], in order
        self._ready = None
        self._connector = None
        self._closed = False
        self._was_connected = False
        self._warned_full = False

    def connect(self, on_ready=None):
        """Connect (and keep reconnecting) in the background; ``on_ready()`` the first time."""
        self._ready = on_ready
        self._connector = gevent.spawn(self._connect_loop)

    def _connect_loop(self):
        delay = RECONNECT['initialDelay']
        attempts = 0
        since = time.monotonic()
        warned = set()
        while not self._closed:
            self.state = 'connecting'
            try:
                fd = self._open_link()
            except (OSError, LinkAuthError) as exc:
                attempts += 1
                self._warn_failure(exc, attempts, time.monotonic() - since, warned)
                gevent.sleep(delay * (1 + random.random() * RECONNECT['jitter']) / 1000.0)
                delay = min(delay * RECONNECT['multiplier'], RECONNECT['maxDelay'])
                continue
            self.channel = Channel(fd, self._on_link_message, self._on_link_close,
                                   ack_timeout=self.ack_timeout, name='broker %d' % self.index).start()
            self._on_linked()
            return

    def _open_link(self):
        """A connected, authenticated socket fd to the broker (OSError, LinkAuthError)."""
        sock = gsocket.socket(gsocket.AF_UNIX, gsocket.SOCK_STREAM)
        try:
            sock.connect(self.socket_path)
            prove_to_peer(sock, self.secret_key, auth_timeout(self.ack_timeout))
        except BaseException:
            sock.close()
            raise
        return sock.detach()

    def _warn_failure(self, exc, attempts, elapsed, warned):
        """One warning per kind of failure per outage; none while a broker is merely respawning."""
        if isinstance(exc, LinkRefusedError):
            kind, text = 'refused', 'Broker %d refused this worker: %s' % (self.index, exc)
        elif isinstance(exc, LinkAuthError):
            kind, text = 'auth', ('Refused the process listening on the socket of broker %d (%s): %s'
                                  % (self.index, self.socket_path, exc))
        elif elapsed >= QUIET_OUTAGE:
            kind, text = 'connect', ('Could not connect to broker %d at %s (attempt %d): %s'
                                     % (self.index, self.socket_path, attempts, exc))
        else:
            return
        if kind not in warned:
            warned.add(kind)
            self.on_warning(BrokerError(text))

    def _on_linked(self):
        self.state = 'connected'
        self._warned_full = False
        if self._was_connected:
            log.info('reconnected to broker %d', self.index)
        reconnected, self._was_connected = self._was_connected, True
        for name in self.channels:
            self._resubscribe(name, reconnected)
        self._rejoin()
        queued, self._queue = self._queue, {}
        for action, encoded, callback, timer, size in queued.values():
            if timer is not None:
                timer.close()
            self.budget.give_back(size)
            self._send(action, codec.decode_json(encoded), callback)
        if self._ready is not None:
            ready, self._ready = self._ready, None
            ready()

    def _resubscribe(self, name, reconnected):
        """Subscribe to ``name`` again; after a reconnect, catch up what this worker missed:
        the history of a channel with history, the members of a presence's events channel."""
        token = self.positions.hold(name) if reconnected else None
        if reconnected and name.startswith(EVENTS_PREFIX):
            token = self._announced[name] = set()

        def resubscribed(err, _data):
            if err:
                self.on_warning(BrokerError('Failed to resubscribe to Broker server channels: %s' % err))
            if token is None:
                return
            if name.startswith(EVENTS_PREFIX):
                self._announce_members(name, token, err)
            else:
                self._resync(name, token, err)
        self.channel.send('subscribe', {'channel': name}, resubscribed)

    def _resync(self, name, token, err):
        """Read what this worker missed of the history of ``name`` from the broker and deliver
        it (:meth:`gsc.core.history.ChannelPositions.resync`); ``err``: the resubscribe failed."""
        if err:
            self.positions.finish(name, token, err)
            return
        self.positions.resync(name, token, lambda since, epoch, answered: self.command(
            'history', {'channel': name, 'since': since, 'epoch': epoch, 'limit': None}, answered))

    def _announce_members(self, name, announced, err):
        """Deliver a ``join`` on the events channel ``name`` for each member the broker has
        whose join did not arrive since the reconnect (the other workers joined them first)."""
        if err:
            if self._announced.get(name) is announced:
                del self._announced[name]
            return

        def answered(err, members):
            if self._announced.get(name) is not announced:
                return
            del self._announced[name]
            if err:
                self.on_warning(BrokerError('Failed to read the members of %s after a reconnect: %s'
                                            % (_cut(owner_channel(name)), err)))
                return
            for socket_id, info in (members or {}).items():
                if socket_id not in announced:
                    self.on_message(name, presence_event('join', socket_id, info), None)
        self.command('presence', {'channel': owner_channel(name)}, answered)

    def _on_link_message(self, message, _respond):
        if message['type'] == 'message':
            data = message.get('data') or {}
            channel, value, offset = data.get('channel'), data.get('data', UNDEFINED), data.get('offset')
            if offset is not None:
                self.positions.message(channel, value, (offset, data.get('epoch')))
                return
            announced = self._announced.get(channel) if self._announced else None
            if announced is not None and isinstance(value, dict) and value.get('event') == 'join':
                announced.add(value.get('socketId'))
            self.on_message(channel, value, None)

    def _on_link_close(self, _channel, reason):
        self.state = 'disconnected'
        self.channel = None
        if self._closed:
            return
        if self._was_connected:
            self.losses += 1
            self.on_warning(BrokerError(
                'Lost the connection to broker %d (%s) - messages published on its channels until '
                'it is back are lost' % (self.index, reason)))
        self._connector = gevent.spawn(self._connect_loop)

    def command(self, action, fields, callback=None):
        """Send a command now, or queue it (by value) until the link is connected.

        With ``pubSubBatchDuration``, pub/sub commands written within that many ms leave
        together (one write to the broker's socket).  A command the link cannot carry or
        hold fails with ``BrokerError`` (``callback(err, None)``, else a warning).
        """
        if self.state == 'connected':
            unsent = self.channel.unsent
            if unsent > self.budget.limit:
                self._refuse(callback, BrokerError(
                    'Failed to %s%s - broker %d is not keeping up: %d bytes are still unsent '
                    '(maxBrokerQueueBytes is %d)'
                    % (action, _about(fields), self.index, unsent, self.budget.limit)))
                return
            if self.batch_duration and action in BATCHED_ACTIONS:
                self._batch()
            self._send(action, fields, callback)
            return
        self._enqueue(action, fields, callback)

    def _send(self, action, fields, callback):
        try:
            self.channel.send(action, fields, callback)
        except ResourceLimitError as exc:
            self._refuse(callback, self._too_large(action, fields, exc.size))

    def _enqueue(self, action, fields, callback):
        encoded = codec.encode(fields).encode('utf-8')
        if len(encoded) + FRAME_OVERHEAD > Channel.max_frame:
            self._refuse(callback, self._too_large(action, fields, len(encoded)))
            return
        size = len(encoded) + ENTRY_OVERHEAD
        if not self.budget.take(size):
            err = BrokerError(
                'Failed to %s%s - broker %d is unavailable and the commands queued for the '
                'brokers already hold %d of maxBrokerQueueBytes %d bytes'
                % (action, _about(fields), self.index, self.budget.used, self.budget.limit))
            if callback is not None:
                callback(err, None)
            elif not self._warned_full:
                self._warned_full = True
                self.on_warning(err)
            return
        entry = [action, encoded, callback, None, size]
        if callback is not None:
            entry[3] = get_hub().loop.timer(self.ack_timeout / 1000.0)
            entry[3].start(self._expire_queued, entry)
        self._queue[id(entry)] = entry

    def _too_large(self, action, fields, size):
        return BrokerError('Failed to %s%s - the command is %d bytes, more than a broker link '
                           'carries (%d bytes)' % (action, _about(fields), size, Channel.max_frame))

    def _refuse(self, callback, err):
        if callback is not None:
            callback(err, None)
        else:
            self.on_warning(err)

    def _batch(self):
        if self._batch_timer is None:
            self.channel.cork()
            self._batch_timer = get_hub().loop.timer(self.batch_duration / 1000.0)
            self._batch_timer.start(self._flush_batch, self.channel)

    def _flush_batch(self, channel):
        self._batch_timer.close()
        self._batch_timer = None
        channel.uncork()

    def _expire_queued(self, entry):
        if self._queue.pop(id(entry), None) is not None:
            entry[3].close()
            self.budget.give_back(entry[4])
            gevent.spawn(entry[2], TimeoutError('Broker Error - The %s action timed out' % entry[0]), None)

    def close(self):
        """Stop reconnecting and close the link."""
        self._closed = True
        if self._connector is not None:
            self._connector.kill()
        if self.channel is not None:
            self.channel.close('the worker is stopping')

    def _rejoin(self):
        """Send the presence joins of this worker again: the broker dropped them when the link
        closed (or is a new process)."""
        for (channel, socket_id), info in self.members.items():
            self.channel.send('presenceJoin', {'channel': channel, 'socketId': socket_id, 'info': info},
                              self._on_rejoined)

    def _on_rejoined(self, err, _data):
        if err:
            self.on_warning(BrokerError('Failed to join a presence again after a reconnect: %s' % err))


class BrokerEngine:
    """The default engine of a cluster: one :class:`BrokerLink` per broker socket path."""

    def __init__(self, socket_paths, secret_key, ack_timeout=10000, on_warning=None,
                 batch_duration=None, max_queue_bytes=None, history_rules=None):
        self.history_rules = history_rules or HistoryRules()
        self.on_warning = on_warning or (lambda err: log.warning('%s', err))
        self.on_gap = None
        self.budget = QueueBudget(_queue_limit(max_queue_bytes))
        self.links = [BrokerLink(i, path, secret_key, self._deliver, self._warn, ack_timeout,
                                 batch_duration, self.budget, self._report_gap)
                      for i, path in enumerate(socket_paths)]
        self.mapper = None
        self._on_message = None

    def _warn(self, err):
        self.on_warning(err)

    def _deliver(self, channel, data, position):
        self._on_message(channel, data, position)

    def _report_gap(self, channel, report):
        """A gap of ``channel`` that the broker's history could not fill after a reconnect: to
        ``on_gap(channel, report)`` (the exchange tells the channel's sockets), and a warning."""
        self.on_warning(BrokerError('Lost publications of channel %s while the link to its broker '
                                    'was down: %s' % (_cut(channel), report.get('error') or
                                                      'its history no longer holds them')))
        if self.on_gap is not None:
            self.on_gap(channel, report)

    def link_for(self, key):
        """The link of the broker that owns ``key`` (a channel name or a key chain); with
        one broker the key is not hashed (``hash_key(key, 1)`` is 0 at once)."""
        return self.links[hash_key(key, len(self.links))]

    def link_for_data(self, key):
        """The link of the broker that stores ``key``: the custom mapper's choice when set
        (``exchange.set_mapper``), else the hash of the key."""
        if self.mapper is None:
            return self.link_for(key)
        return self.links[self.mapper(key, len(self.links)) % len(self.links)]

    def start(self, on_message, on_ready=None, on_warning=None):
        """Connect to every broker; ``on_ready()`` once all links are up."""
        self._on_message = on_message
        if on_warning is not None:
            self.on_warning = on_warning
        remaining = [len(self.links)]

        def one_ready():
            remaining[0] -= 1
            if remaining[0] == 0 and on_ready is not None:
                on_ready()
        for link in self.links:
            link.connect(one_ready)

    def subscribe(self, channel, callback=None):
        """Subscribe this worker to ``channel`` at its broker."""
        link = self.link_for(owner_channel(channel))
        link.channels.add(channel)
        if self.history_rules.policy(channel) is not None:
            link.positions.track(channel)

        def done(err, _data):
            if err:
                link.channels.discard(channel)
                link.positions.forget(channel)
            if callback is not None:
                callback(err)
        if link.state == 'connected':
            link.command('subscribe', {'channel': channel}, done)
        else:
            done(None, None)  # subscribed as soon as the link (re)connects

    def unsubscribe(self, channel, callback=None):
        """Release this worker's subscription to ``channel``."""
        link = self.link_for(owner_channel(channel))
        link.channels.discard(channel)
        link.positions.forget(channel)
        if link.state == 'connected':
            link.command('unsubscribe', {'channel': channel})
        if callback is not None:
            callback(None)

    def publish(self, channel, data, callback=None):
        """Publish through the broker that owns ``channel``; ``callback(err)``."""
        done = None if callback is None else (lambda err, _value: callback(err))
        self.link_for(channel).command('publish', defined(channel=channel, value=data), done)

    def history(self, channel, since, epoch, limit, callback):
        """Read ``channel``'s history at the broker that owns it (docs/history.md);
        ``callback(err, {'epoch', 'offset', 'publications', 'recovered'})``."""
        if not isinstance(channel, str):
            callback(BrokerError('Failed to read history - the channel name %r is not a string' % (channel,)),
                     None)
            return
        self.link_for(channel).command(
            'history', {'channel': channel, 'since': since, 'epoch': epoch, 'limit': limit}, callback)

    def send(self, data, map_index, callback):
        """``data`` to the broker controllers: '*' every broker, a number that broker, a key or
        list of keys hashed; ``callback(err, [answer per broker])``."""
        if map_index == '*' or map_index is None:
            links = self.links
        elif isinstance(map_index, int) and not isinstance(map_index, bool):
            links = [self.links[map_index % len(self.links)]]
        elif isinstance(map_index, list):
            links = list({id(link): link for link in map(self.link_for, map_index)}.values())
        else:
            links = [self.link_for(map_index)]
        self._gather(links, 'send', lambda link: {'value': data}, callback, list)

    def kv(self, action, fields, callback):
        """A key/value command, routed by its key (or to every broker); ``callback(err, value)``."""
        if action in kv.ROUTED_BY_KEY:
            self.link_for_data(fields['key']).command(action, fields, callback)
        elif action in ('expire', 'unexpire'):
            groups = {}
            for key in fields.get('keys') or ():
                groups.setdefault(self.link_for_data(key).index, []).append(key)
            links = [self.links[i] for i in groups]
            self._gather(links, action, lambda link: dict(fields, keys=groups[link.index]), callback,
                         lambda answers: None)
        elif action == 'getAll':
            self._gather(self.links, action, lambda link: fields, callback, _merge)
        else:
            self._gather(self.links, action, lambda link: fields, callback, lambda answers: None)

    @staticmethod
    def _gather(links, action, fields_for, callback, combine):
        if not links:
            callback(None, combine([]))
            return
        answers = [None] * len(links)
        pending = [len(links)]
        failed = []

        def answered(i, err, value):
            if err and not failed:
                failed.append(err)
            answers[i] = value
            pending[0] -= 1
            if pending[0] == 0:
                callback(failed[0] if failed else None, combine(answers))
        for i, link in enumerate(links):
            link.command(action, fields_for(link), lambda err, value, i=i: answered(i, err, value))

    def presence_join(self, channel, socket_id, info, callback=None):
        """Join ``socket_id`` to the members of ``channel`` at its broker; ``callback(err)``
        (BrokerError when the channel is full).  While the link is down the join waits for it."""
        link = self.link_for(channel)
        link.members[(channel, socket_id)] = info

        def done(err, _data=None):
            if err:
                link.members.pop((channel, socket_id), None)
            if callback is not None:
                callback(err)
        if link.state == 'connected':
            link.command('presenceJoin', {'channel': channel, 'socketId': socket_id, 'info': info}, done)
        else:
            done(None)

    def presence_leave(self, channel, socket_id):
        """Remove ``socket_id`` from the members of ``channel``."""
        link = self.link_for(channel)
        if link.members.pop((channel, socket_id), None) is not None and link.state == 'connected':
            link.command('presenceLeave', {'channel': channel, 'socketId': socket_id})

    def presence(self, channel, callback):
        """The members of ``channel``: ``callback(err, {socket_id: info})``."""
        self.link_for(channel).command('presence', {'channel': channel}, callback)

    def link_states(self):
        """``[(name, up, losses)]`` of the links: ``('broker 0', True, 1)``, ..."""
        return [('broker %d' % link.index, link.state == 'connected', link.losses)
                for link in self.links]

    def close(self):
        """Close every link."""
        for link in self.links:
            link.close()


def _queue_limit(value):
    """``maxBrokerQueueBytes`` checked (None: the default)."""
    if value is None:
        return DEFAULT_MAX_QUEUE_BYTES
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1:
        raise InvalidOptionsError('The maxBrokerQueueBytes option must be a positive number of '
                                  'bytes, not %r' % (value,))
    return int(value)


def _about(fields):
    """`` on channel X`` for a pub/sub command, `` at key K`` for a key/value one."""
    if 'channel' in fields:
        return ' on channel %s' % _cut(fields['channel'])
    if 'key' in fields:
        return ' at key %s' % _cut(fields['key'])
    return ''


def _cut(name):
    """``name`` as text, at most 100 characters of it."""
    text = str(name)
    return text if len(text) <= 100 else text[:100] + '...'


def _merge(answers):
    merged = {}
    for answer in answers:
        if isinstance(answer, dict):
            merged.update(answer)
    return merged
