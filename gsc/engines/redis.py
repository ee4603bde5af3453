"""The Redis engine: workers of many gsc instances share channels through Redis pub/sub.

Each worker subscribes at Redis only to the channels that have local subscribers (the
exchange counts them), so an instance never decodes traffic nobody on it wants.  The
connections are gevent sockets whether or not the process is monkey-patched.

Start: given a ``start_timeout`` (a worker of a cluster: its ``startTimeout``), an engine
that cannot reach Redis within 3/4 of it, and at most 10 s, makes the worker fail its start
with one error naming the URL (:meth:`RedisEngine.start_failure`), before the master's own
timeout would say less; without one (a standalone server) it warns once and keeps trying.
When Redis goes away the worker warns once (naming the URL), reconnects with back-off,
subscribes again to every channel it still needs and logs one line when Redis is back;
what was published meanwhile is lost.

Nothing is queued for Redis: a publish while it is unreachable fails with ``BrokerError``
after at most ``connectTimeout``, and so does a message larger than ``max_message_bytes``
(the broker links' frame limit, well under Redis' own 512 MB string limit, so that one
client cannot make Redis and every subscribed instance buffer a huge message).  At most
``poolSize`` publishes wait for Redis at once; more fail at once, so a Redis that
stops answering cannot hold a greenlet per publish.

History (``channelHistory``) lives in Redis, so every instance shares one history per channel:
a Lua script (:mod:`gsc.engines.redis_lua`) gives each publication its offset, keeps it in a
stream bounded by the policy's size, bytes and ttl, and publishes it with its position as
``H<offset> <epoch> <JSON>`` (JSON never starts with ``H``, so plain channels keep their plain
PUBLISH).  Presence (``channelPresence``) is a ZSET of socket ids scored by their expiry plus a
HASH of members per channel; each engine re-scores its own members every
``PRESENCE_REFRESH`` seconds and a member expires ``PRESENCE_TTL`` ms after its last refresh,
so the members of a worker that vanished are gone within that.
"""

import logging
import random
import time
from urllib.parse import urlsplit, urlunsplit

import gevent
import redis
from gevent import socket as gsocket

from ..core import codec
from ..errors import BrokerError, InvalidArgumentsError, ResourceLimitError
from ..core.history import HistoryRules, new_epoch, read_request
from ..cluster.ipc import MAX_FRAME
from ..core.presence import PresenceRules, events_channel, no_presence
from . import redis_kv, redis_lua

log = logging.getLogger(__name__)

DEFAULT_URL = 'redis://127.0.0.1:6379/0'
DEFAULT_PREFIX = 'gsc:'
DEFAULT_CONNECT_TIMEOUT = 5000
"""``connectTimeout`` (ms): connecting to Redis, and the longest a command waits for its answer."""
DEFAULT_MAX_CONNECTIONS = 32
"""``poolSize``: connections to Redis per worker (publishes in flight, and the
subscriber)."""
MAX_START_TIMEOUT = 10000
"""The longest (ms) a worker waits for Redis at start (3/4 of ``startTimeout`` when smaller)."""
RECONNECT_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)
YIELD_EVERY = 32
PRESENCE_TTL = 6000
"""Milliseconds a presence member lives at Redis after its last refresh."""
PRESENCE_REFRESH = 2.0
"""Seconds between two refreshes of an engine's presence members."""
MAX_OFFSET = 2 ** 53
"""Offsets past this (never reached) are read as this: Lua numbers are doubles."""
REFRESH_BATCH = 256
"""Members refreshed by one script call, and script calls sent in one pipeline."""


class GeventConnection(redis.Connection):
    """A redis-py connection over a gevent socket (cooperative without monkey patching), with
    redis-py's TCP keepalive (idle 30 s, 3 probes 5 s apart): the subscriber, which waits
    for messages without a timeout, learns within a minute that a Redis host vanished."""

    def _connect(self):
        sock = gsocket.create_connection((self.host, self.port), timeout=self.socket_connect_timeout)
        sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
        if self.socket_keepalive:
            sock.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_KEEPALIVE, 1)
            for option, value in self.socket_keepalive_options.items():
                sock.setsockopt(gsocket.IPPROTO_TCP, option, value)
        sock.settimeout(self.socket_timeout)
        return sock


def redacted_url(url):
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = '%s:***@%s' % (parts.username or '', parts.netloc.rpartition('@')[2])
    return urlunsplit(parts._replace(netloc=netloc))


def _channel_name(name):
    """A channel name from Redis, as gsc wrote it (lone surrogates included)."""
    if not isinstance(name, bytes):
        return name
    try:
        return name.decode('utf-8', 'surrogatepass')
    except UnicodeDecodeError:
        return name.decode('utf-8', 'replace')


class RedisEngine:
    """Pub/sub over Redis (``brokerEngine: 'redis'``).

    ``url`` is a redis URL; ``key_prefix`` is put before every channel name at Redis so
    several apps can share one server.  ``on_warning(err)`` receives connection losses.
    ``connect_timeout`` (ms) bounds connecting and every command; ``max_connections`` the
    connections of the pool; ``start_timeout`` (ms: the worker's ``startTimeout``; None: no
    limit) sets how long a worker waits for Redis before failing its start (attribute
    ``start_timeout``, in seconds: 3/4 of it, at most 10 s).  ``history_rules`` and
    ``presence_rules`` (``.policy(channel)``: gsc.core.history / gsc.core.presence) name the channels
    that keep a history or a presence at Redis.
    """

    max_message_bytes = MAX_FRAME
    """The largest publish (its JSON, in bytes) sent to Redis."""

    def __init__(self, url=DEFAULT_URL, key_prefix=DEFAULT_PREFIX, on_warning=None,
                 connect_timeout=DEFAULT_CONNECT_TIMEOUT, max_connections=DEFAULT_MAX_CONNECTIONS,
                 start_timeout=None, history_rules=None, presence_rules=None):
        self.url = url
        self.key_prefix = key_prefix
        self.on_warning = on_warning or (lambda err: log.warning('%s', err))
        self.start_timeout = (None if start_timeout is None
                              else min(start_timeout * 0.75, MAX_START_TIMEOUT) / 1000.0)
        self.max_connections = max_connections
        seconds = connect_timeout / 1000.0
        self._pool = redis.ConnectionPool.from_url(
            url, connection_class=GeventConnection, socket_connect_timeout=seconds,
            socket_timeout=seconds, max_connections=max_connections)
        self._client = redis.Redis(connection_pool=self._pool)
        self._channels = set()
        self._pubsub = None
        self.losses = 0
        self._listener = None
        self._on_message = None
        self._closed = False
        self._last_error = None
        self.history_rules = history_rules or HistoryRules()
        self.presence_rules = presence_rules or PresenceRules()
        self._members = {}  # channel -> {socket id: member JSON} of this engine's sockets
        self._refresher = None
        self._purger = None
        self._store = redis_kv.RedisStore(self._client, key_prefix, self.max_message_bytes)
        register = self._client.register_script
        self._history_publish = register(redis_lua.HISTORY_PUBLISH)
        self._history_read = register(redis_lua.HISTORY_READ)
        self._presence_join = register(redis_lua.PRESENCE_JOIN)
        self._presence_refresh = register(redis_lua.PRESENCE_REFRESH)
        self._presence_leave = register(redis_lua.PRESENCE_LEAVE)
        self._presence_query = register(redis_lua.PRESENCE_QUERY)

    def start(self, on_message, on_ready=None, on_warning=None):
        """Connect and listen; ``on_ready()`` after the first successful connection."""
        self._on_message = on_message
        if on_warning is not None:
            self.on_warning = on_warning
        self._listener = gevent.spawn(self._listen_forever, on_ready)

    def subscribe(self, channel, callback=None):
        """Subscribe this worker at Redis; succeeds at once (a lost connection resubscribes)."""
        self._channels.add(channel)
        self._send_subscription('subscribe', channel, callback)

    def unsubscribe(self, channel, callback=None):
        """Stop receiving ``channel`` from Redis."""
        self._channels.discard(channel)
        self._send_subscription('unsubscribe', channel, callback)

    def _key(self, channel):
        """The Redis name of ``channel``: bytes, since a client's name may hold a lone surrogate."""
        return (self.key_prefix + channel).encode('utf-8', 'surrogatepass')

    def _send_subscription(self, command, channel, callback):
        err = None
        if self._pubsub is not None:
            try:
                getattr(self._pubsub, command)(self._key(channel))
            except (redis.RedisError, OSError) as exc:
                err = BrokerError('Failed to %s channel %s at Redis - %s' % (command, channel, exc))
        if callback is not None:
            callback(err)

    def _history_keys(self, channel):
        return [self._key('history:meta:' + channel), self._key('history:stream:' + channel)]

    def _failure(self, what, exc):
        """The BrokerError of a Redis call for ``what`` that raised ``exc``."""
        if isinstance(exc, redis.MaxConnectionsError):
            return BrokerError('%s - %d connections to Redis at %s are all busy (poolSize)'
                               % (what, self.max_connections, redacted_url(self.url)))
        if isinstance(exc, redis.ResponseError):
            return BrokerError('%s - Redis answered: %s' % (what, exc))
        return BrokerError('%s - Redis is unreachable: %s' % (what, exc))

    def publish(self, channel, data, callback=None):
        """Publish ``data`` on every instance; ``callback(err)`` after Redis took it.  On a
        history channel Redis keeps it and gives it its offset."""
        policy = self.history_rules.policy(channel)
        err = None
        try:
            payload = codec.encode(data).encode('utf-8')
            if len(payload) > self.max_message_bytes:
                raise ValueError('the message is %d bytes, more than the %d bytes sent to Redis'
                                 % (len(payload), self.max_message_bytes))
            if policy is None:
                self._client.publish(self._key(channel), payload)
            else:
                self._history_publish(
                    keys=self._history_keys(channel),
                    args=[payload, new_epoch(), policy.size, _ms(policy.ttl), policy.max_bytes,
                          self._key(channel)])
        except ValueError as exc:
            err = BrokerError('Failed to publish to channel %s - %s' % (channel, exc))
        except (redis.RedisError, OSError) as exc:
            err = self._failure('Failed to publish to channel %s' % channel, exc)
        if callback is not None:
            callback(err)
        elif err is not None:
            self.on_warning(err)

    def history(self, channel, since, epoch, limit, callback):
        """``callback(err, result)``: ``channel``'s publications after ``since`` (in ``epoch``),
        or its last ``limit`` ones when ``since`` is None (see :func:`history_result`)."""
        try:
            policy, since, epoch, limit = read_request(self.history_rules, channel, since, epoch, limit)
        except (BrokerError, InvalidArgumentsError) as exc:
            callback(exc, None)
            return
        try:
            current_epoch, latest, entries = self._history_read(
                keys=self._history_keys(channel),
                args=[new_epoch(), policy.size, _ms(policy.ttl), policy.max_bytes,
                      '' if since is None else min(since, MAX_OFFSET), max(limit, 1)])
            result = history_result(since, epoch, limit, current_epoch.decode('ascii'),
                                    int(latest), entries)
        except (redis.RedisError, OSError) as exc:
            callback(self._failure('Failed to read the history of channel %s' % channel, exc), None)
            return
        callback(None, result)

    def presence_join(self, channel, socket_id, info, callback):
        """Add ``socket_id`` (``info``: ``{'user', 'worker'}``) to ``channel``'s members;
        ``callback(err)``, a BrokerError when the channel has ``maxMembers`` already."""
        policy = self.presence_rules.policy(channel)
        if policy is None:
            callback(no_presence(channel))
            return
        member = codec.encode({'socketId': socket_id, 'user': info.get('user'),
                               'worker': info.get('worker')}).encode('utf-8')
        what = 'Failed to join the presence of channel %.100s' % channel
        # kept from now on, so that a presence_leave while Redis answers drops it for good
        self._members.setdefault(channel, {})[socket_id] = member
        try:
            joined = self._presence_join(
                keys=self._presence_keys(channel),
                args=[self._events_channel(channel, policy), PRESENCE_TTL, policy.max_members,
                      socket_id, member])
            err = None if joined else BrokerError('%s - it is full (maxMembers is %d)'
                                                  % (what, policy.max_members))
        except (redis.RedisError, OSError) as exc:
            err = self._failure(what, exc)
        if err is not None:
            self._forget_member(channel, socket_id)
        elif self._refresher is None and not self._closed:
            self._refresher = gevent.spawn(self._refresh_forever)
        callback(err)

    def _forget_member(self, channel, socket_id):
        """Stop refreshing a member; True when it was this engine's."""
        members = self._members.get(channel)
        if members is None or members.pop(socket_id, None) is None:
            return False
        if not members:
            del self._members[channel]
        return True

    def presence_leave(self, channel, socket_id):
        """Remove ``socket_id`` from ``channel``'s members (when Redis is unreachable, the
        member expires by itself)."""
        if not self._forget_member(channel, socket_id):
            return
        policy = self.presence_rules.policy(channel)
        try:
            self._presence_leave(keys=self._presence_keys(channel),
                                 args=[self._events_channel(channel, policy), socket_id])
        except (redis.RedisError, OSError) as exc:
            log.debug('Could not leave the presence of %s at Redis (it expires): %s', channel, exc)

    def presence(self, channel, callback):
        """``callback(err, {socket id: {'user', 'worker'}})``: ``channel``'s members on every
        instance."""
        policy = self.presence_rules.policy(channel)
        if policy is None:
            callback(no_presence(channel), None)
            return
        try:
            members = self._presence_query(keys=self._presence_keys(channel),
                                           args=[self._events_channel(channel, policy)])
        except (redis.RedisError, OSError) as exc:
            callback(self._failure('Failed to read the presence of channel %s' % channel, exc), None)
            return
        result = {}
        for member in members:
            info = codec.decode_json(member)
            result[info.pop('socketId')] = info
        callback(None, result)

    def _presence_keys(self, channel):
        return [self._key('presence:expiry:' + channel), self._key('presence:members:' + channel)]

    def _events_channel(self, channel, policy):
        """Where ``channel``'s joins and leaves are published (b'' when it publishes none)."""
        return self._key(events_channel(channel)) if policy.join_leave else b''

    def _refresh_forever(self):
        """Keep this engine's members alive at Redis (and put back the ones Redis lost)."""
        while not self._closed:
            gevent.sleep(PRESENCE_REFRESH)
            try:
                self._refresh_members()
            except (redis.RedisError, OSError) as exc:
                log.debug('Could not refresh the presence members at Redis: %s', exc)

    def _refresh_members(self):
        """One refresh: a script call per channel and batch of members, pipelined."""
        calls = []
        for channel, members in list(self._members.items()):
            policy = self.presence_rules.policy(channel)
            head = [self._events_channel(channel, policy), PRESENCE_TTL, policy.max_members]
            items = list(members.items())
            for start in range(0, len(items), REFRESH_BATCH):
                args = head + [field for item in items[start:start + REFRESH_BATCH] for field in item]
                calls.append((self._presence_keys(channel), args))
        refused = 0
        for start in range(0, len(calls), REFRESH_BATCH):
            pipe = self._client.pipeline(transaction=False)
            for keys, args in calls[start:start + REFRESH_BATCH]:
                self._presence_refresh(keys=keys, args=args, client=pipe)
            refused += sum(pipe.execute())
        if refused:
            self.on_warning(BrokerError('%d presence members could not be put back at Redis: '
                                        'their channels are full (maxMembers)' % refused))

    def send(self, data, map_index, callback):
        """There are no broker controllers behind Redis."""
        callback(BrokerError('exchange.send needs the broker processes; the Redis engine has none'))

    def kv(self, action, fields, callback):
        """A key/value command on the store at Redis (:mod:`gsc.engines.redis_kv`), shared by
        every instance; ``callback(err, value)``."""
        if self._purger is None and not self._closed:
            self._purger = gevent.spawn(self._purge_forever)
        try:
            value = self._store.execute(action, fields)
        except (redis.RedisError, OSError) as exc:
            callback(self._failure('Failed the key/value %s' % action, exc))
            return
        except (BrokerError, InvalidArgumentsError, ResourceLimitError) as exc:
            callback(exc)
            return
        callback(None, value)

    def _purge_forever(self):
        """Drop the expired values of the store at Redis (also those other engines set)."""
        while not self._closed:
            gevent.sleep(redis_kv.PURGE_INTERVAL)
            try:
                self._store.purge()
            except (redis.RedisError, OSError, BrokerError) as exc:
                log.debug('Could not purge the expired key/value entries at Redis: %s', exc)

    def link_states(self):
        """``[('redis', up, losses)]``: the subscriber connection to Redis."""
        return [('redis', self._pubsub is not None, self.losses)]

    def close(self):
        """Stop listening and drop the connections."""
        self._closed = True
        for greenlet in (self._listener, self._refresher, self._purger):
            if greenlet is not None:
                greenlet.kill()
        if self._pubsub is not None:
            self._pubsub.close()
        self._pool.disconnect()

    def start_failure(self):
        """The error of a start that did not reach Redis within ``start_timeout``."""
        err = BrokerError('Could not connect to Redis at %s within %d ms: %s'
                          % (redacted_url(self.url), self.start_timeout * 1000, self._last_error))
        err.stack = '%s: %s' % (err.name, err)  # gsc's own code says nothing more: no traceback
        return err

    def _listen_forever(self, on_ready):
        """Connect, read, and connect again after a loss, until closed."""
        attempt = 0
        lost_at = None
        while not self._closed:
            try:
                self._connect_pubsub()
            except (redis.RedisError, OSError) as exc:
                self._last_error = exc
                if attempt == 0 and on_ready is not None and self.start_timeout is None:
                    self.on_warning(BrokerError('Could not connect to Redis at %s - trying again: '
                                                '%s' % (redacted_url(self.url), exc)))
                gevent.sleep(self._reconnect_delay(attempt))
                attempt += 1
                continue
            attempt = 0
            if on_ready is not None:
                on_ready, ready = None, on_ready
                ready()
            elif lost_at is not None:
                log.info('Reconnected to Redis at %s after %.1f s', redacted_url(self.url),
                         time.monotonic() - lost_at)
            try:
                self._read_messages()
            except (redis.RedisError, OSError) as exc:
                if self._closed:
                    return
                self._pubsub = None
                self.losses += 1
                lost_at = time.monotonic()
                self.on_warning(BrokerError(
                    'Lost the connection to Redis at %s - messages published until it is back '
                    'are lost: %s' % (redacted_url(self.url), exc)))

    @staticmethod
    def _reconnect_delay(attempt):
        """Seconds before connection attempt ``attempt + 1``: back-off with jitter."""
        return RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)] * (1 + random.random() / 2)

    def _connect_pubsub(self):
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        pubsub.ping()
        channels = [self._key(channel) for channel in self._channels]
        if channels:
            pubsub.subscribe(*channels)
        self._pubsub = pubsub

    def _read_messages(self):
        prefix_length = len(self.key_prefix)
        pubsub = self._pubsub
        received = 0
        while not self._closed:
            message = pubsub.parse_response(block=True)
            if message is None or message[0] not in (b'message', 'message'):
                continue
            channel = _channel_name(message[1])
            raw = message[2]
            try:
                if raw[:1] == b'H':
                    data, position = parse_history_message(raw)
                else:
                    data, position = codec.decode_json(raw), None
            except ValueError:
                self.on_warning(BrokerError('Dropped a message on %s that is not JSON' % channel))
                continue
            self._on_message(channel[prefix_length:], data, position)
            received += 1
            if received % YIELD_EVERY == 0:
                # a busy subscription never blocks in recv: yield so that the sockets' writes
                # (loop callbacks, each carrying all the messages queued since) and the other
                # greenlets run
                gevent.sleep(0)


def _ms(seconds):
    return int(seconds * 1000)


def parse_history_message(raw):
    """``(data, (offset, epoch))`` of ``H<offset> <epoch> <JSON>`` from Redis (a publication
    on a history channel: JSON never starts with ``H``); ValueError when it is malformed."""
    offset, epoch, raw = raw.split(b' ', 2)
    return codec.decode_json(raw), (int(offset[1:]), epoch.decode('ascii'))


def history_result(since, epoch, limit, current_epoch, latest, entries):
    """The answer of a history read (docs: the issue-11 contract) from what Redis returned:
    ``entries`` ascending after ``since``, or the newest first when ``since`` is None."""
    publications = [{'offset': int(entry_id.split(b'-')[0]), 'data': codec.decode_json(fields[1])}
                    for entry_id, fields in entries]
    if since is None:
        publications = publications[:limit][::-1]
        recovered = True
    else:
        first = publications[0]['offset'] if publications else latest + 1
        recovered = epoch == current_epoch and since <= latest and first == since + 1
        publications = publications[:limit] if recovered else []
    return {'epoch': current_epoch, 'offset': latest, 'publications': publications,
            'recovered': recovered}
