"""The key/value store of the Redis engine: SocketCluster's key/value API shared by every
instance, atomically per call (docs/redis.md, "Key/value store").

A call reads the entries of the top-level keys it touches, runs the command with
:func:`gsc.core.kv.execute` on a :class:`~gsc.core.datamap.DataMap` holding only them (so the
answers, errors and JavaScript quirks are the broker's), and writes back the entries that
changed with one Lua script that refuses when any of them changed meanwhile; it then runs
again after a random pause, at most ``MAX_ATTEMPTS`` times.  Every key of the store shares
one hash tag, so each script runs in one slot of a Redis Cluster.  Expired values are dropped by the next call that
reads them and by each engine's purge every ``PURGE_INTERVAL`` seconds.
"""

import random
import time

import gevent

from ..core import codec, kv
from ..core.datamap import DataMap, head_key
from ..core.protocol import UNDEFINED
from ..errors import BrokerError, InvalidArgumentsError, ResourceLimitError
from . import redis_lua

MAX_ATTEMPTS = 64
"""Runs of one call whose write found a touched entry changed by another call."""
MAX_BACKOFF = 0.05
"""The longest pause (s) before running a refused call again (random, doubling from 1 ms)."""
PURGE_INTERVAL = 1.0
"""Seconds between two purges of expired values by an engine that used the store."""
PURGE_BATCH = 256
"""Top-level keys purged by one write."""
ALL = None


class RedisStore:
    """The key/value store at Redis under ``key_prefix``; ``client`` (assignable: the engine's
    current Redis or RedisCluster) runs the scripts; an entry (a top-level key with everything
    under it) is at most ``max_bytes`` of JSON, as a broker link's frame."""

    def __init__(self, client, key_prefix, max_bytes):
        self.client = client
        tag = key_prefix + '{#kv}:'
        self.keys = [(tag + name).encode('utf-8') for name in ('store', 'order', 'expiry', 'seq')]
        self.max_bytes = max_bytes
        register = client.register_script
        self._write = register(redis_lua.KV_WRITE)
        self._read_all = register(redis_lua.KV_READ_ALL)
        self._remove_all = register(redis_lua.KV_REMOVE_ALL)

    def execute(self, action, fields):
        """The answer of the key/value command ``action`` (as :func:`gsc.core.kv.execute`);
        raises its InvalidArgumentsError, a ResourceLimitError for an entry past
        ``max_bytes``, or the Redis error (the engine makes it a BrokerError)."""
        if action == 'removeAll':
            self._remove_all(keys=self.keys, args=[], client=self.client)
            return UNDEFINED
        names = ALL if action == 'getAll' else _touched(action, fields)
        for attempt in range(MAX_ATTEMPTS):
            done, result = self._attempt(names, lambda data_map: kv.execute(data_map, action, fields))
            if done:
                return result
            gevent.sleep(random.random() * min(0.001 * 2 ** attempt, MAX_BACKOFF))
        raise BrokerError('The key/value %s was refused %d times: other calls kept changing its '
                          'keys at Redis' % (action, MAX_ATTEMPTS))

    def purge(self):
        """Drop the values whose expiry passed (at most ``PURGE_BATCH`` top-level keys)."""
        due = self.client.zrangebyscore(self.keys[2], '-inf', round(time.time()),
                                        start=0, num=PURGE_BATCH)
        if due:
            self._attempt([codec.decode_json(field) for field in due], lambda data_map: None)

    def _attempt(self, names, operate):
        """``(written, result)``: ``operate(data_map)`` on the entries of ``names`` (ALL: every
        key), and whether its changes were written (or there were none)."""
        before = self._read(names)
        data_map = DataMap()
        for name, raw in before.items():
            if raw:
                data_map.import_entry(name, codec.decode_json(raw))
        data_map.purge_expired()
        result = operate(data_map)
        args = []
        for name, raw in before.items():
            entry = data_map.export_entry(name)
            text = b'' if entry is None else codec.encode(entry).encode('utf-8')
            if text == raw:
                continue
            if len(text) > self.max_bytes:
                raise ResourceLimitError(
                    'The key/value entry %s would be %d bytes, more than the %d bytes kept at '
                    'Redis' % (codec.encode(name), len(text), self.max_bytes),
                    size=len(text), limit=self.max_bytes)
            expiries = [expiry for _chain, expiry in (entry or {}).get('e', ())]
            args += [_field(name), raw, text, '1' if entry and 'v' in entry else '0',
                     min(expiries) if expiries else '']
        if not args:
            return True, result
        return bool(self._write(keys=self.keys, args=args, client=self.client)), result

    def _read(self, names):
        """``{name: entry JSON (b'' for none)}`` of ``names`` (ALL: every key, in insertion
        order), read at once."""
        if names is ALL:
            order, flat = self._read_all(keys=self.keys[:2], args=[], client=self.client)
            entries = dict(zip(flat[::2], flat[1::2]))
            ordered = set(order)
            fields = order + [field for field in entries if field not in ordered]
            return {codec.decode_json(field): entries.get(field, b'') for field in fields}
        if not names:
            return {}
        fields = [_field(name) for name in names]
        values = self.client.hmget(self.keys[0], fields)
        return {name: value or b'' for name, value in zip(names, values)}


def _field(name):
    """The HASH field of top-level key ``name``: its JSON (``3`` and ``'3'`` are one key)."""
    return codec.encode(name).encode('utf-8')


def _touched(action, fields):
    """The top-level keys a command touches; an invalid command raises the broker's error."""
    try:
        if action in ('expire', 'unexpire'):
            keys = fields['keys']
            if not isinstance(keys, (list, tuple)):
                raise InvalidArgumentsError('')
            return list(dict.fromkeys(head_key(key) for key in keys))
        if action in kv.ROUTED_BY_KEY:
            return [head_key(fields['key'])]
    except (KeyError, InvalidArgumentsError):
        pass
    kv.execute(DataMap(), action, fields)  # raises the error a broker answers
    raise InvalidArgumentsError('Invalid %s command' % action)
