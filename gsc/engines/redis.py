"""The Redis engine: workers of many gsc instances share channels through Redis pub/sub.

Each worker subscribes at Redis only to the channels that have local subscribers (the
exchange counts them), so an instance never decodes traffic nobody on it wants.  The
connections are gevent sockets whether or not the process is monkey-patched.  When
Redis goes away the worker reconnects with back-off and subscribes again to every
channel it still needs; what was published meanwhile is lost, and said so in a warning.

Nothing is queued for Redis: a publish while it is unreachable fails at once with
``BrokerError``, and so does a message larger than ``max_message_bytes`` (the broker
links' frame limit, well under Redis' own 512 MB string limit, so that one client cannot
make Redis and every subscribed instance buffer a huge message).
"""

import logging
import random

import gevent
import redis
from gevent import socket as gsocket

from .. import codec
from ..errors import BrokerError
from ..ipc import MAX_FRAME

log = logging.getLogger(__name__)

DEFAULT_URL = 'redis://127.0.0.1:6379/0'
DEFAULT_PREFIX = 'gsc:'
RECONNECT_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)
YIELD_EVERY = 32


class GeventConnection(redis.Connection):
    """A redis-py connection over a gevent socket (cooperative without monkey patching)."""

    def _connect(self):
        sock = gsocket.create_connection((self.host, self.port), timeout=self.socket_connect_timeout)
        sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
        if self.socket_keepalive:
            sock.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_KEEPALIVE, 1)
        sock.settimeout(self.socket_timeout)
        return sock


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
    """

    max_message_bytes = MAX_FRAME
    """The largest publish (its JSON, in bytes) sent to Redis."""

    def __init__(self, url=DEFAULT_URL, key_prefix=DEFAULT_PREFIX, on_warning=None):
        self.url = url
        self.key_prefix = key_prefix
        self.on_warning = on_warning or (lambda err: log.warning('%s', err))
        self._pool = redis.ConnectionPool.from_url(url, connection_class=GeventConnection)
        self._client = redis.Redis(connection_pool=self._pool)
        self._channels = set()
        self._pubsub = None
        self._listener = None
        self._on_message = None
        self._closed = False

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

    def publish(self, channel, data, callback=None):
        """Publish ``data`` on every instance; ``callback(err)`` after Redis took it."""
        try:
            payload = codec.encode(data).encode('utf-8')
            if len(payload) > self.max_message_bytes:
                raise ValueError('the message is %d bytes, more than the %d bytes sent to Redis'
                                 % (len(payload), self.max_message_bytes))
            self._client.publish(self._key(channel), payload)
            err = None
        except ValueError as exc:
            err = BrokerError('Failed to publish to channel %s - %s' % (channel, exc))
        except (redis.RedisError, OSError) as exc:
            err = BrokerError('Failed to publish to channel %s - Redis is unreachable: %s' % (channel, exc))
        if callback is not None:
            callback(err)
        elif err is not None:
            self.on_warning(err)

    def send(self, data, map_index, callback):
        """There are no broker controllers behind Redis."""
        callback(BrokerError('exchange.send needs the broker processes; the Redis engine has none'))

    def kv(self, action, fields, callback):
        """The key/value store lives in the broker processes, not in Redis."""
        callback(BrokerError('The key/value store needs the broker engine (brokerEngine '
                             '"sc-broker-cluster"); the Redis engine only carries pub/sub'))

    def close(self):
        """Stop listening and drop the connections."""
        self._closed = True
        if self._listener is not None:
            self._listener.kill()
        if self._pubsub is not None:
            self._pubsub.close()
        self._pool.disconnect()

    def _listen_forever(self, on_ready):
        attempt = 0
        while not self._closed:
            try:
                self._connect_pubsub()
                attempt = 0
                if on_ready is not None:
                    on_ready, ready = None, on_ready
                    ready()
                self._read_messages()
            except (redis.RedisError, OSError) as exc:
                if self._closed:
                    return
                self._pubsub = None
                if attempt == 0:
                    self.on_warning(BrokerError(
                        'Lost the connection to Redis at %s - messages published until it is back '
                        'are lost: %s' % (self.url, exc)))
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                attempt += 1
                gevent.sleep(delay * (1 + random.random() / 2))

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
            try:
                data = codec.decode_json(message[2])
            except ValueError:
                self.on_warning(BrokerError('Dropped a message on %s that is not JSON' % channel))
                continue
            self._on_message(channel[prefix_length:], data)
            received += 1
            if received % YIELD_EVERY == 0:
                # a busy subscription never blocks in recv: yield so that the sockets' writes
                # (loop callbacks, each carrying all the messages queued since) and the other
                # greenlets run
                gevent.sleep(0)
