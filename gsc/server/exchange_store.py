"""The exchange's messages to the broker controllers and its key/value store: ``send``,
``map`` and the mapper, and ``set``/``get``/``add``/``remove``/... (SocketCluster's key/value
API), each with a callback or, without one, blocking the calling greenlet.

:class:`KeyValueStore` is a mixin of :class:`gsc.server.exchange.Exchange` (its ``engine``).
"""

from gevent.event import AsyncResult

from ..core.protocol import none_if_undefined


class KeyValueStore:
    """Broker messages and the key/value store of an :class:`~gsc.server.exchange.Exchange` (a mixin)."""

    def set_mapper(self, mapper):
        """Choose the broker of each key/value key: ``mapper(key, broker_count) -> index``
        (channels keep the default hash)."""
        self.engine.mapper = mapper

    def get_mapper(self):
        """The custom key mapper, or None for the default hash."""
        return getattr(self.engine, 'mapper', None)

    def map(self, key, method, *args, **kwargs):
        """Call the key/value ``method`` (e.g. ``'get'``) on ``key``: ``exchange.map(k, 'get')``."""
        return getattr(self, method)(key, *args, **kwargs)

    def send(self, data, map_index='*', callback=None):
        """Send ``data`` to the broker controllers (``'*'`` all, a key or list of keys hashed,
        a number: that broker); ``callback(err, [answer per broker])``, or block and return."""
        return self._call(lambda done: self.engine.send(data, map_index, done), callback)

    def _kv(self, action, callback, **fields):
        return self._call(lambda done: self.engine.kv(action, fields, done), callback)

    @staticmethod
    def _call(start, callback):
        if callback is not None:
            start(lambda err, value=None: callback(err, none_if_undefined(value)))
            return None
        result = AsyncResult()
        start(lambda err, value=None: result.set_exception(err) if err else result.set(none_if_undefined(value)))
        return result.get()

    def set(self, key, value, get_value=False, callback=None):
        """Store ``value`` at ``key`` (a key or a key chain); the value back with ``get_value``."""
        return self._kv('set', callback, key=key, value=value, getValue=get_value)

    def get(self, key, callback=None):
        """A copy of the value at ``key`` (None when missing: see :meth:`has_key`)."""
        return self._kv('get', callback, key=key)

    def get_range(self, key, from_index, to_index=None, callback=None):
        """Elements ``[from_index, to_index)`` of a list, or the entries of a map between two keys."""
        return self._kv('getRange', callback, key=key, fromIndex=from_index, toIndex=to_index)

    def get_all(self, callback=None):
        """The whole store (of every broker, merged)."""
        return self._kv('getAll', callback)

    def count(self, key, callback=None):
        """Entries of the map at ``key``; 1 for a scalar, 0 when missing."""
        return self._kv('count', callback, key=key)

    def add(self, key, value, callback=None):
        """Append ``value`` to the list at ``key``; its index."""
        return self._kv('add', callback, key=key, value=value)

    def concat(self, key, value, get_value=False, callback=None):
        """Append the items of ``value`` at ``key``."""
        return self._kv('concat', callback, key=key, value=value, getValue=get_value)

    def remove(self, key, get_value=False, callback=None):
        """Delete ``key``; the removed value with ``get_value``."""
        return self._kv('remove', callback, key=key, getValue=get_value)

    def remove_range(self, key, from_index, to_index=None, get_value=False, callback=None):
        """Delete a range (see :meth:`get_range`)."""
        return self._kv('removeRange', callback, key=key, fromIndex=from_index, toIndex=to_index,
                        getValue=get_value)

    def remove_all(self, callback=None):
        """Empty the store of every broker."""
        return self._kv('removeAll', callback)

    def splice(self, key, index=None, count=None, items=None, get_value=False, callback=None):
        """JavaScript's ``Array.prototype.splice`` on the list at ``key``."""
        return self._kv('splice', callback, key=key, index=index, count=count, items=items,
                        getValue=get_value)

    def pop(self, key, get_value=False, callback=None):
        """Remove the last element of the list at ``key``; ``[last]`` with ``get_value``."""
        return self._kv('pop', callback, key=key, getValue=get_value)

    def has_key(self, key, callback=None):
        """True when something (None included) is stored at ``key``."""
        return self._kv('hasKey', callback, key=key)

    def expire(self, keys, seconds, callback=None):
        """Remove each key chain of ``keys`` after ``seconds``."""
        return self._kv('expire', callback, keys=keys, value=seconds)

    def unexpire(self, keys, callback=None):
        """Cancel the expiry of ``keys``."""
        return self._kv('unexpire', callback, keys=keys)

    def get_expiry(self, key, callback=None):
        """The expiry time of ``key`` in unix seconds, or None."""
        return self._kv('getExpiry', callback, key=key)

    def extract_keys(self, key, callback=None):
        """The keys of the map at ``key``."""
        return self._kv('extractKeys', callback, key=key)

    def extract_values(self, key, callback=None):
        """The values of the map at ``key``."""
        return self._kv('extractValues', callback, key=key)
