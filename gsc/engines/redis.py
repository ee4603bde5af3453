"""The Redis engine: workers of many gsc instances share channels, history, presence and the
key/value store through Redis: one server, a primary that Redis Sentinel names, or a Redis
Cluster (docs/redis.md).

Each worker subscribes at Redis only to the channels that have local subscribers (the
exchange counts them), so an instance never decodes traffic nobody on it wants.  In a Redis
Cluster it uses sharded pub/sub: a publication goes (SPUBLISH) only to the shard that owns its
channel's slot, and each worker holds one subscriber connection (SSUBSCRIBE) per primary that
owns one of its channels.  Every key and pub/sub name of a channel carries the hash tag
``{channel}``, so each Lua script runs in one slot.  The connections are gevent sockets
whether or not the process is monkey-patched.

Start: given a ``start_timeout`` (a worker of a cluster: its ``startTimeout``), an engine
that cannot reach Redis within 3/4 of it, and at most 10 s, makes the worker fail its start
with one error naming where Redis is (:meth:`RedisEngine.start_failure`), before the
master's own timeout would say less; without one (a standalone server) it warns once and
keeps trying.  When a subscriber connection is lost (Redis gone, a Sentinel failover, a
cluster shard's failover or resharding) the worker warns once, reconnects with back-off (to
the primary the sentinels name now, or to the primary that owns each slot now), subscribes
again and logs one line; on a history channel it first delivers what it missed from the
history (or warns that the history no longer has it).  Every ``HEALTH_INTERVAL`` the engine
PINGs Redis, and :meth:`RedisEngine.link_states` (``/health``) says down, with the reason,
when Redis did not answer within ``HEALTH_TIMEOUT``; an idle subscriber PINGs too, so a
silent link is noticed within seconds.

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
so the members of a worker that vanished are gone within that.  The key/value store is
:mod:`gsc.engines.redis_kv`.
"""

import logging
import random
import time
from urllib.parse import urlsplit, urlunsplit

import gevent
import redis
from gevent import socket as gsocket
from gevent.event import Event
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

from ..core import codec
from ..errors import BrokerError, InvalidArgumentsError, ResourceLimitError
from ..core.history import ChannelPositions, HistoryRules, new_epoch, read_request
from ..core.codec import MAX_FRAME
from ..core.presence import PresenceRules, events_channel, no_presence, owner_channel
from ..core.protocol import UNDEFINED, defined
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
ERRORS = (redis.RedisError, RedisClusterException, OSError)
"""What a Redis call raises when Redis (or a cluster's topology) fails it."""
HEALTH_INTERVAL = 1.0
"""Seconds between two PINGs of Redis (and of an idle subscriber connection)."""
HEALTH_TIMEOUT = 2.0
"""Seconds a PING waits for its answer (``connectTimeout`` when shorter) before Redis counts
as unreachable (``/health`` answers 503) and an idle subscriber connection as lost."""
CLUSTER_CHECK_INTERVAL = 5.0
"""Seconds between two reads of a Redis Cluster's slots when nothing said it changed."""
CLUSTER_RETRIES = 3
"""Attempts of a command that a Redis Cluster redirected (MOVED, ASK) or could not serve."""


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


class GeventSentinelConnection(GeventConnection, SentinelManagedConnection):
    """A gevent connection to the primary that the sentinels name (asked at each connect)."""


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


class _Subscriber:
    """One pub/sub connection to Redis (in a cluster: to one shard's primary, with sharded
    SSUBSCRIBE) for the Redis channel names in ``channels``.  It connects, subscribes, reads,
    PINGs when idle (a link that answers nothing for ``health_timeout`` is lost) and connects
    again after a loss, calling ``engine._subscriber_up/_subscriber_lost``."""

    def __init__(self, engine, name, where, open_pubsub, sharded):
        self.engine = engine
        self.name = name
        self.where = where
        self.open_pubsub = open_pubsub
        self.sharded = sharded
        self.channels = set()
        self.pubsub = None
        self.losses = 0
        self.error = None
        self.greenlet = None

    def start(self):
        """Connect and read in a greenlet of its own."""
        self.greenlet = gevent.spawn(self._run)

    def stop(self):
        """Close the connection and stop reading."""
        if self.greenlet is not None:
            self.greenlet.kill(block=False)
        if self.pubsub is not None:
            self.pubsub.close()
            self.pubsub = None

    def send(self, subscribe, names):
        """(S)SUBSCRIBE or (S)UNSUBSCRIBE ``names`` now when connected; an error is a lost link,
        which the reader notices (and then subscribes again to all of ``channels``)."""
        if self.pubsub is None or not names:
            return None
        try:
            self._send(self.pubsub, subscribe, names)
        except ERRORS as exc:
            return exc
        return None

    def _send(self, pubsub, subscribe, names):
        """One (S)SUBSCRIBE for all ``names``; sharded, one per name (a cluster refuses the
        names of several slots in one)."""
        command = getattr(pubsub, ('s' if self.sharded else '') + ('subscribe' if subscribe else 'unsubscribe'))
        for group in ([name] for name in names) if self.sharded else [names]:
            command(*group)

    def _run(self):
        attempt = 0
        engine = self.engine
        lost_at = None
        while not engine._closed:
            try:
                pubsub = self.open_pubsub()
                pubsub.ping()
                if self.channels:
                    self._send(pubsub, True, list(self.channels))
            except ERRORS as exc:
                self.error = exc
                engine._subscriber_failed(self, attempt, exc)
                gevent.sleep(_reconnect_delay(attempt))
                attempt += 1
                continue
            attempt = 0
            self.pubsub = pubsub
            self.error = None
            engine._subscriber_up(self, lost_at)
            try:
                self._read(pubsub)
            except ERRORS as exc:
                if engine._closed:
                    return
                pubsub.close()
                self.pubsub = None
                self.error = exc
                self.losses += 1
                lost_at = time.monotonic()
                engine._subscriber_lost(self, exc)

    def _read(self, pubsub):
        engine = self.engine
        data_type = b'smessage' if self.sharded else b'message'
        received = 0
        pinged = None
        while not engine._closed:
            try:
                message = pubsub.parse_response(block=True) if _readable(pubsub.connection) else None
            except redis.ResponseError as exc:
                # a sharded subscription refused (MOVED: its slot moved); the link is fine
                engine._topology_changed('%s answered: %s' % (self.where, exc))
                continue
            if message is None:
                if pinged is None:
                    pubsub.ping()
                    pinged = time.monotonic()
                elif time.monotonic() - pinged > engine.health_timeout:
                    raise redis.ConnectionError('no answer to PING within %.1f s' % engine.health_timeout)
                continue
            kind = message[0] if isinstance(message, list) else b'pong'
            if kind in (b'pong', 'pong', b'PONG'):
                pinged = None
            elif kind == data_type:
                engine._received(message[1], message[2])
                received += 1
                if received % YIELD_EVERY == 0:
                    # a busy subscription never blocks in recv: yield so that the sockets'
                    # writes (loop callbacks) and the other greenlets run
                    gevent.sleep(0)
            elif kind == b'sunsubscribe' and message[1] in self.channels:
                # the cluster unsubscribed us: the channel's slot moved to another shard
                engine._topology_changed('%s dropped the subscription of %s (its slot moved)'
                                         % (self.where, _channel_name(message[1])))


def _readable(connection):
    """Whether ``connection`` has a reply to read within HEALTH_INTERVAL (waiting cooperatively:
    redis-py's own wait with a timeout blocks the process in poll())."""
    if connection._sock is None:
        raise redis.ConnectionError('the connection is closed')
    if connection.can_read(timeout=0):
        return True
    try:
        gsocket.wait_read(connection._sock.fileno(), timeout=HEALTH_INTERVAL)
    except gsocket.timeout:
        return False
    return True


class RedisEngine:
    """Pub/sub, history, presence and the key/value store over Redis (``brokerEngine: 'redis'``).

    Where Redis is: ``url`` (one server, or with ``cluster`` a node of a Redis Cluster: None
    detects one), or ``sentinels`` (``[(host, port), ...]``) and ``master_name`` for the primary
    Redis Sentinel names (``sentinel_password`` to reach the sentinels; the URL's password and
    database still apply to the primary).  ``key_prefix`` is put before every name at Redis so
    several apps can share it.  ``on_warning(err)`` receives connection losses.
    ``connect_timeout`` (ms) bounds connecting and every command; ``max_connections`` the
    connections of the pool (per node in a cluster); ``start_timeout`` (ms: the worker's
    ``startTimeout``; None: no limit) sets how long a worker waits for Redis before failing its
    start (attribute ``start_timeout``, in seconds: 3/4 of it, at most 10 s).
    ``history_rules`` and ``presence_rules`` (``.policy(channel)``: gsc.core.history /
    gsc.core.presence) name the channels that keep a history or a presence at Redis.
    ``min_replicas``: a publish on a history channel is acknowledged once that many replicas
    have it (Redis ``WAIT``; else BrokerError), so that a failover does not lose it silently.
    """

    max_message_bytes = MAX_FRAME
    """The largest publish (its JSON, in bytes) sent to Redis."""

    def __init__(self, url=DEFAULT_URL, key_prefix=DEFAULT_PREFIX, on_warning=None,
                 connect_timeout=DEFAULT_CONNECT_TIMEOUT, max_connections=DEFAULT_MAX_CONNECTIONS,
                 start_timeout=None, history_rules=None, presence_rules=None, sentinels=None,
                 master_name=None, sentinel_password=None, cluster=None, min_replicas=0):
        self.url = url
        self.key_prefix = key_prefix
        self.on_warning = on_warning or (lambda err: log.warning('%s', err))
        self.start_timeout = (None if start_timeout is None
                              else min(start_timeout * 0.75, MAX_START_TIMEOUT) / 1000.0)
        self.max_connections = max_connections
        self.min_replicas = min_replicas
        self.wait_ms = connect_timeout
        seconds = connect_timeout / 1000.0
        self.health_timeout = min(seconds, HEALTH_TIMEOUT)
        self._connection_options = dict(
            socket_connect_timeout=seconds, socket_timeout=seconds, max_connections=max_connections,
            retry=Retry(NoBackoff(), 0))
        self.cluster = bool(cluster)
        self._detect_cluster = cluster is None and not sentinels
        self._client = None
        self._store = None
        self._scripts = {}
        if sentinels:
            self.where = 'Redis primary %r of the sentinels %s' % (
                master_name, ', '.join('%s:%s' % tuple(address) for address in sentinels))
            self._set_client(self._sentinel_client(sentinels, master_name, sentinel_password))
        else:
            self.where = ('Redis Cluster at %s' if self.cluster else 'Redis at %s') % redacted_url(url)
            if not self.cluster:
                self._set_client(redis.Redis(connection_pool=redis.ConnectionPool.from_url(
                    url, connection_class=GeventConnection, **self._connection_options)))
        self._channels = set()
        self._subscribers = {}  # '' (one Redis) or a cluster primary's name -> _Subscriber
        self.on_gap = None  # on_gap(channel, report): a gap history could not fill (the exchange's)
        self.positions = ChannelPositions(self._deliver, self._report_gap)
        self._topology = Event()
        self.losses = 0
        self._greenlets = []
        self._on_message = None
        self._on_ready = None
        self._closed = False
        self._last_error = None
        self._reachable = None  # None: not yet known; else (up, reason)
        self.history_rules = history_rules or HistoryRules()
        self.presence_rules = presence_rules or PresenceRules()
        self._members = {}  # channel -> {socket id: member JSON} of this engine's sockets
        self._refresher = None
        self._purger = None

    def _sentinel_client(self, sentinels, master_name, sentinel_password):
        """The client of the primary that the sentinels name (asked again after a loss)."""
        sentinel = Sentinel([])
        sentinel.sentinels = [redis.Redis(connection_pool=redis.ConnectionPool(
            host=host, port=int(port), password=sentinel_password, connection_class=GeventConnection,
            **dict(self._connection_options, max_connections=2))) for host, port in sentinels]
        options = {key: value for key, value in redis.connection.parse_url(self.url).items()
                   if key in ('db', 'username', 'password')}
        return sentinel.master_for(master_name, connection_class=GeventSentinelConnection,
                                   **options, **self._connection_options)

    def _cluster_client(self):
        """A RedisCluster client from the URL's node (connects: raises when unreachable)."""
        return RedisCluster.from_url(
            self.url, connection_class=GeventConnection, require_full_coverage=False,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), CLUSTER_RETRIES),
            **{key: value for key, value in self._connection_options.items() if key != 'retry'})

    def _node_client(self, host, port):
        """A client of one cluster node, for a subscriber connection of its own (the cluster
        client's node pools are replaced when it reads the slots again)."""
        options = {key: value for key, value in redis.connection.parse_url(self.url).items()
                   if key in ('username', 'password')}
        return redis.Redis(connection_pool=redis.ConnectionPool(
            host=host, port=port, connection_class=GeventConnection, **options,
            **dict(self._connection_options, max_connections=2)))

    def _set_client(self, client):
        """Use ``client`` (a Redis or a RedisCluster) for every command and script."""
        self._client = client
        self._store = redis_kv.RedisStore(client, self.key_prefix, self.max_message_bytes)
        register = client.register_script
        for name in ('HISTORY_PUBLISH', 'HISTORY_READ', 'HISTORY_NEW_EPOCH', 'PRESENCE_JOIN',
                     'PRESENCE_REFRESH', 'PRESENCE_LEAVE', 'PRESENCE_QUERY'):
            source = getattr(redis_lua, name)
            self._scripts[name] = register(redis_lua.sharded(source) if self.cluster else source)

    def _script(self, name, keys, args, client=None):
        return self._scripts[name](keys=keys, args=args, client=client or self._client)

    def start(self, on_message, on_ready=None, on_warning=None):
        """Connect and listen; ``on_ready()`` after the first successful connection."""
        self._on_message = on_message
        self._on_ready = on_ready
        if on_warning is not None:
            self.on_warning = on_warning
        self._greenlets.append(gevent.spawn(self._check_forever))
        if self.cluster or self._detect_cluster:
            self._greenlets.append(gevent.spawn(self._watch_topology))
        else:
            self._start_single()

    def _start_single(self):
        subscriber = _Subscriber(self, 'redis', self.where, lambda: self._client.pubsub(), False)
        subscriber.channels = {self._name(channel) for channel in self._channels}
        self._subscribers[''] = subscriber
        subscriber.start()

    # -- names at Redis --------------------------------------------------------------

    def _name(self, channel):
        """The Redis pub/sub name of ``channel``: bytes (a client's name may hold a lone
        surrogate), hash-tagged with the channel whose keys it goes with (for an events
        channel, its presence channel), so both live in one cluster slot."""
        owner = owner_channel(channel)
        suffix = '}' if owner == channel else '}#presence'
        return (self.key_prefix + '{' + owner + suffix).encode('utf-8', 'surrogatepass')

    def _channel_of(self, name):
        """The gsc channel of a Redis pub/sub name (the inverse of :meth:`_name`)."""
        text = _channel_name(name)[len(self.key_prefix) + 1:]
        if text.endswith('}'):
            return text[:-1]
        return events_channel(text[:-len('}#presence')])

    def _keys(self, channel, *names):
        """The Redis keys ``names`` of ``channel``, all in the channel's slot."""
        base = self.key_prefix + '{' + channel + '}:'
        return [(base + name).encode('utf-8', 'surrogatepass') for name in names]

    def _history_keys(self, channel):
        return self._keys(channel, 'history:meta', 'history:stream')

    def _presence_keys(self, channel):
        return self._keys(channel, 'presence:expiry', 'presence:members')

    def _events_channel(self, channel, policy):
        """Where ``channel``'s joins and leaves are published (b'' when it publishes none)."""
        return self._name(events_channel(channel)) if policy.join_leave else b''

    # -- subscriptions ---------------------------------------------------------------

    def subscribe(self, channel, callback=None):
        """Subscribe this worker at Redis; succeeds at once (a lost connection resubscribes)."""
        self._channels.add(channel)
        if self.history_rules.policy(channel) is not None:
            self.positions.track(channel)
        self._send_subscription(True, channel, callback)

    def unsubscribe(self, channel, callback=None):
        """Stop receiving ``channel`` from Redis."""
        self._channels.discard(channel)
        self.positions.forget(channel)
        self._send_subscription(False, channel, callback)

    def _send_subscription(self, subscribe, channel, callback):
        name = self._name(channel)
        subscriber = self._subscriber_for(name, create=subscribe)
        err = None
        if subscriber is not None:
            (subscriber.channels.add if subscribe else subscriber.channels.discard)(name)
            exc = subscriber.send(subscribe, [name])
            if exc is not None:
                err = BrokerError('Failed to %s channel %s at Redis - %s'
                                  % ('subscribe' if subscribe else 'unsubscribe', channel, exc))
        if callback is not None:
            callback(err)

    def _subscriber_for(self, name, create):
        """The subscriber of Redis name ``name`` (in a cluster: at the primary of its slot,
        started when ``create``); None before the topology is known."""
        if not self.cluster:
            return self._subscribers.get('')
        if self._client is None:
            return None
        try:
            node = self._client.get_node_from_key(name)
        except ERRORS as exc:
            self._topology_changed('no primary for %s: %s' % (_channel_name(name), exc))
            return None
        subscriber = self._subscribers.get(node.name)
        if subscriber is None and create:
            subscriber = self._subscribers[node.name] = _Subscriber(
                self, 'redis ' + node.name, 'Redis Cluster primary %s' % node.name,
                lambda host=node.host, port=node.port: self._node_client(host, port).pubsub(), True)
            subscriber.start()
        return subscriber

    # -- Redis Cluster topology --------------------------------------------------------

    def _topology_changed(self, reason):
        """Look at the cluster's slots again soon (a shard lost, a slot moved)."""
        log.debug('Redis Cluster topology check: %s', reason)
        self._topology.set()

    def _watch_topology(self):
        """Cluster mode (or detecting it): connect the cluster client, then keep every
        channel subscribed at the primary of its slot, again after each change."""
        attempt = 0
        refresh = False
        while not self._closed:
            self._topology.clear()
            try:
                if not self.cluster or self._client is None:
                    if not self._connect_cluster():
                        return
                    self._detect_cluster = False
                elif refresh:
                    self._client.nodes_manager.initialize()
                moved = self._assign_channels()
            except ERRORS as exc:
                self._last_error = exc
                self._start_failed(attempt, exc)
                gevent.sleep(_reconnect_delay(attempt))
                attempt += 1
                refresh = True
                continue
            attempt = 0
            if moved:
                log.info('%s: subscribed again to %d channels at the primaries that own them now',
                         self.where, moved)
            self._ready()
            self._topology.wait(CLUSTER_CHECK_INTERVAL)
            refresh = True

    def _connect_cluster(self):
        """Connect the cluster client; when detecting, False (and one Redis from now on)
        when ``url`` is not a cluster node."""
        if self._detect_cluster:
            probe = redis.Redis(connection_pool=redis.ConnectionPool.from_url(
                self.url, connection_class=GeventConnection, **self._connection_options))
            try:
                enabled = probe.info('cluster').get('cluster_enabled') == 1
            finally:
                probe.close()
            if not enabled:
                self._detect_cluster = False
                self._set_client(redis.Redis(connection_pool=redis.ConnectionPool.from_url(
                    self.url, connection_class=GeventConnection, **self._connection_options)))
                self._start_single()
                return False
        client = self._cluster_client()
        if not self.cluster:
            log.info('Redis at %s is a Redis Cluster node: sharded pub/sub from now on',
                     redacted_url(self.url))
            self.cluster = True
            self.where = 'Redis Cluster at %s' % redacted_url(self.url)
        self._set_client(client)
        return True

    def _assign_channels(self):
        """Put every channel at the subscriber of its slot's primary; how many moved."""
        wanted = {}
        for channel in self._channels:
            name = self._name(channel)
            wanted.setdefault(self._client.get_node_from_key(name).name, set()).add(name)
        moved = 0
        for node_name, subscriber in list(self._subscribers.items()):
            names = wanted.get(node_name, set())
            gone = subscriber.channels - names
            subscriber.channels -= gone
            moved += len(gone)
            if not subscriber.channels:
                subscriber.stop()
                del self._subscribers[node_name]
            else:
                subscriber.send(False, list(gone))
        for node_name, names in wanted.items():
            subscriber = self._subscriber_for(next(iter(names)), create=True)
            new = names - subscriber.channels
            subscriber.channels |= new
            subscriber.send(True, list(new))
        return moved

    # -- connection states -------------------------------------------------------------

    def _ready(self):
        if self._on_ready is not None:
            ready, self._on_ready = self._on_ready, None
            ready()

    def _start_failed(self, attempt, exc):
        if attempt == 0 and self._on_ready is not None and self.start_timeout is None:
            self.on_warning(BrokerError('Could not connect to %s - trying again: %s' % (self.where, exc)))

    def _subscriber_failed(self, subscriber, attempt, exc):
        self._last_error = exc
        if self.cluster:
            self._topology_changed('%s: %s' % (subscriber.where, exc))
        else:
            self._start_failed(attempt, exc)

    def _subscriber_up(self, subscriber, lost_at):
        """A subscriber (re)connected and subscribed: the one line that says so, then what its
        history channels missed meanwhile."""
        if not self.cluster:
            self._ready()
        if lost_at is None:
            return
        connection = subscriber.pubsub.connection
        log.info('Reconnected to %s after %.1f s (%s:%s); subscribed again to %d channels',
                 subscriber.where, time.monotonic() - lost_at, connection.host, connection.port,
                 len(subscriber.channels))
        for channel in list(self._channels):
            if channel in self.positions and self._name(channel) in subscriber.channels:
                self._resync(channel)

    def _subscriber_lost(self, subscriber, exc):
        self.losses += 1
        if self.cluster:
            self._topology_changed('%s: %s' % (subscriber.where, exc))
        self.on_warning(BrokerError(
            'Lost the connection to %s - messages published until it is back are lost, except '
            'on history channels: %s' % (subscriber.where, exc)))

    def _check_forever(self):
        """PING Redis every HEALTH_INTERVAL: what :meth:`link_states` says (and /health)."""
        while not self._closed:
            gevent.sleep(HEALTH_INTERVAL)
            client = self._client
            if client is None:
                self._reachable = (False, 'not connected yet: %s' % self._last_error)
                continue
            try:
                with gevent.Timeout(self.health_timeout, redis.TimeoutError('no answer to PING '
                                                                           'within %.1f s' % self.health_timeout)):
                    client.ping()
            except ERRORS as exc:
                if self._reachable is None or self._reachable[0]:
                    log.warning('%s does not answer: %s', self.where, exc)
                self._reachable = (False, str(exc))
                continue
            if self._reachable is not None and not self._reachable[0]:
                log.info('%s answers again', self.where)
            self._reachable = (True, None)

    def link_states(self):
        """``[(name, up, losses, reason)]``: Redis (answering PING), then each subscriber
        connection ('redis', or 'redis <primary>' per cluster shard)."""
        reachable = self._reachable or (self._client is not None, None)
        states = [('redis', reachable[0], self.losses, reachable[1])] if self.cluster else []
        for subscriber in self._subscribers.values():
            up = subscriber.pubsub is not None and (self.cluster or reachable[0])
            reason = (reachable[1] if subscriber.pubsub is not None else
                      str(subscriber.error or 'not connected yet'))
            states.append((subscriber.name, up, subscriber.losses, None if up else reason))
        return states

    # -- messages ------------------------------------------------------------------------

    def _received(self, name, raw):
        """A message from Redis: to ``on_message``, once and in order on a history channel
        (what a lost subscription missed is read from the history first)."""
        channel = self._channel_of(name)
        try:
            if raw[:1] == b'H':
                data, position = parse_history_message(raw)
            else:
                data, position = decode_data(raw), None
        except ValueError:
            self.on_warning(BrokerError('Dropped a message on %s that is not JSON' % channel))
            return
        if position is None:
            self._on_message(channel, data, None)
            return
        if channel in self.positions:
            offset, epoch = self.positions.first_read(channel)
            if epoch == position[1] and position[0] > offset + 1:
                self._resync(channel)  # a gap while subscribed: a shard's subscription moved
        self.positions.message(channel, data, position)

    def _deliver(self, channel, data, position):
        self._on_message(channel, data, position)

    def _resync(self, channel):
        """Read what this worker missed of the history channel ``channel`` (the whole new
        epoch after a restart or a flush) and deliver it, then the live publications held
        meanwhile; in the reader's greenlet, so the live ones wait at Redis.  When the history
        went back in its epoch (a failover lost publications), the channel gets a new epoch,
        so that recoveries from the lost offsets say ``recovered: false``."""
        def read(since, epoch, answered):
            def checked(err, result):
                if err is None and result['epoch'] == epoch and result['offset'] < since:
                    self._renew_epoch(channel, epoch, since, result['offset'])
                answered(err, result)
            self.history(channel, since, epoch, None, checked)
        self.positions.resync(channel, self.positions.hold(channel), read)

    def _renew_epoch(self, channel, epoch, delivered, latest):
        try:
            renewed = self._script('HISTORY_NEW_EPOCH', self._history_keys(channel)[:1],
                                   [epoch, new_epoch()]).decode('ascii')
        except ERRORS as exc:
            renewed = 'unknown: %s' % exc
        self.on_warning(BrokerError(
            'The history of channel %s at Redis went back from offset %d to %d (a failover '
            'lost publications): it has the new epoch %s, so recoveries are told '
            '"recovered: false"' % (channel, delivered, latest, renewed)))

    def _report_gap(self, channel, report):
        """A gap of ``channel`` that Redis' history could not fill: to ``on_gap(channel,
        report)`` (the exchange tells the channel's sockets), and a warning."""
        self.on_warning(BrokerError('Lost publications of channel %s while %s was unreachable: %s'
                                    % (channel[:100], self.where,
                                       report.get('error') or 'its history no longer holds them')))
        if self.on_gap is not None:
            self.on_gap(channel, report)

    def _failure(self, what, exc):
        """The BrokerError of a Redis call for ``what`` that raised ``exc``."""
        if isinstance(exc, redis.MaxConnectionsError):
            return BrokerError('%s - %d connections to %s are all busy (poolSize)'
                               % (what, self.max_connections, self.where))
        if isinstance(exc, redis.ResponseError):
            return BrokerError('%s - Redis answered: %s' % (what, exc))
        return BrokerError('%s - %s is unreachable: %s' % (what, self.where, exc))

    def publish(self, channel, data, callback=None):
        """Publish ``data`` on every instance; ``callback(err)`` after Redis took it.  On a
        history channel Redis keeps it and gives it its offset (and with ``min_replicas``, a
        replica has it)."""
        policy = self.history_rules.policy(channel)
        err = None
        try:
            payload = encode_data(data)
            if len(payload) > self.max_message_bytes:
                raise ValueError('the message is %d bytes, more than the %d bytes sent to Redis'
                                 % (len(payload), self.max_message_bytes))
            if self._client is None:
                raise redis.ConnectionError('not connected yet: %s' % self._last_error)
            if policy is None:
                self._client.execute_command('SPUBLISH' if self.cluster else 'PUBLISH',
                                             self._name(channel), payload)
            else:
                self._publish_history(channel, policy, payload)
        except ValueError as exc:
            err = BrokerError('Failed to publish to channel %s - %s' % (channel, exc))
        except ERRORS as exc:
            err = self._failure('Failed to publish to channel %s' % channel, exc)
        if callback is not None:
            callback(err)
        elif err is not None:
            self.on_warning(err)

    def _publish_history(self, channel, policy, payload):
        keys = self._history_keys(channel)
        args = [payload, new_epoch(), policy.size, _ms(policy.ttl), policy.max_bytes,
                self._name(channel)]
        if not self.min_replicas:
            self._script('HISTORY_PUBLISH', keys, args)
            return
        node = (self._client.get_node_from_key(keys[0]).redis_connection if self.cluster
                else self._client)
        pipe = node.pipeline(transaction=False)
        self._script('HISTORY_PUBLISH', keys, args, client=pipe)
        pipe.execute_command('WAIT', self.min_replicas, self.wait_ms)
        replicas = pipe.execute()[-1]
        if replicas < self.min_replicas:
            raise redis.ResponseError('%d of the %d replicas asked for (minReplicas) have it '
                                      'after %d ms' % (replicas, self.min_replicas, self.wait_ms))

    def history(self, channel, since, epoch, limit, callback):
        """``callback(err, result)``: ``channel``'s publications after ``since`` (in ``epoch``),
        or its last ``limit`` ones when ``since`` is None (see :func:`history_result`)."""
        try:
            policy, since, epoch, limit = read_request(self.history_rules, channel, since, epoch, limit)
        except (BrokerError, InvalidArgumentsError) as exc:
            callback(exc, None)
            return
        try:
            if self._client is None:
                raise redis.ConnectionError('not connected yet: %s' % self._last_error)
            current_epoch, latest, entries = self._script('HISTORY_READ', self._history_keys(channel), [
                new_epoch(), policy.size, _ms(policy.ttl), policy.max_bytes,
                '' if since is None else min(since, MAX_OFFSET), max(limit, 1)])
            result = history_result(since, epoch, limit, current_epoch.decode('ascii'),
                                    int(latest), entries)
        except ERRORS as exc:
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
            joined = self._script(
                'PRESENCE_JOIN', self._presence_keys(channel), [self._events_channel(channel, policy), PRESENCE_TTL, policy.max_members,
                      socket_id, member])
            err = None if joined else BrokerError('%s - it is full (maxMembers is %d)'
                                                  % (what, policy.max_members))
        except ERRORS as exc:
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
            self._script('PRESENCE_LEAVE', self._presence_keys(channel),
                         [self._events_channel(channel, policy), socket_id])
        except ERRORS as exc:
            log.debug('Could not leave the presence of %s at Redis (it expires): %s', channel, exc)

    def presence(self, channel, callback):
        """``callback(err, {socket id: {'user', 'worker'}})``: ``channel``'s members on every
        instance."""
        policy = self.presence_rules.policy(channel)
        if policy is None:
            callback(no_presence(channel), None)
            return
        try:
            members = self._script('PRESENCE_QUERY', self._presence_keys(channel),
                                   [self._events_channel(channel, policy)])
        except ERRORS as exc:
            callback(self._failure('Failed to read the presence of channel %s' % channel, exc), None)
            return
        result = {}
        for member in members:
            info = codec.decode_json(member)
            result[info.pop('socketId')] = info
        callback(None, result)

    def _refresh_forever(self):
        """Keep this engine's members alive at Redis (and put back the ones Redis lost)."""
        while not self._closed:
            gevent.sleep(PRESENCE_REFRESH)
            try:
                self._refresh_members()
            except ERRORS as exc:
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
        if self.cluster:  # each call at the primary of its channel's slot
            refused = sum(self._script('PRESENCE_REFRESH', keys, args) for keys, args in calls)
        for start in range(0, 0 if self.cluster else len(calls), REFRESH_BATCH):
            pipe = self._client.pipeline(transaction=False)
            for keys, args in calls[start:start + REFRESH_BATCH]:
                self._script('PRESENCE_REFRESH', keys, args, client=pipe)
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
        if self._store is None:
            callback(self._failure('Failed the key/value %s' % action,
                                   redis.ConnectionError('not connected yet: %s' % self._last_error)))
            return
        if self._purger is None and not self._closed:
            self._purger = gevent.spawn(self._purge_forever)
        try:
            value = self._store.execute(action, fields)
        except ERRORS as exc:
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
            except ERRORS + (BrokerError,) as exc:
                log.debug('Could not purge the expired key/value entries at Redis: %s', exc)

    def close(self):
        """Stop listening and drop the connections."""
        self._closed = True
        for greenlet in self._greenlets + [self._refresher, self._purger]:
            if greenlet is not None:
                greenlet.kill()
        for subscriber in self._subscribers.values():
            subscriber.stop()
        if self._client is not None:
            self._client.close()

    def start_failure(self):
        """The error of a start that did not reach Redis within ``start_timeout``."""
        err = BrokerError('Could not connect to %s within %d ms: %s'
                          % (self.where, self.start_timeout * 1000, self._last_error))
        err.stack = '%s: %s' % (err.name, err)  # gsc's own code says nothing more: no traceback
        return err


def _reconnect_delay(attempt):
    """Seconds before connection attempt ``attempt + 1``: back-off with jitter."""
    return RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)] * (1 + random.random() / 2)


def _ms(seconds):
    return int(seconds * 1000)


def encode_data(data):
    """The bytes Redis carries for a publication's data: its JSON, or nothing for a publication
    without data (``UNDEFINED``: no JSON text is empty)."""
    return b'' if data is UNDEFINED else codec.encode(data).encode('utf-8')


def decode_data(raw):
    """The data of :func:`encode_data`'s bytes; ValueError when they are not JSON."""
    return UNDEFINED if not raw else codec.decode_json(raw)


def parse_history_message(raw):
    """``(data, (offset, epoch))`` of ``H<offset> <epoch> <JSON>`` from Redis (a publication
    on a history channel: JSON never starts with ``H``); ValueError when it is malformed."""
    offset, epoch, raw = raw.split(b' ', 2)
    return decode_data(raw), (int(offset[1:]), epoch.decode('ascii'))


def history_result(since, epoch, limit, current_epoch, latest, entries):
    """The answer of a history read (docs: the issue-11 contract) from what Redis returned:
    ``entries`` ascending after ``since``, or the newest first when ``since`` is None."""
    publications = [defined(offset=int(entry_id.split(b'-')[0]), data=decode_data(fields[1]))
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
