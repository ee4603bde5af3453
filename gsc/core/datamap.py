"""The key/value store a broker holds (SocketCluster's FlexiMap + ExpiryManager), without I/O.

Keys are *key chains*: a single key or a list path (``['a', 'b', 'c']``).  A key is a
str or an int (an integral float counts as an int); as in JavaScript, ``1`` and ``'1'``
are the same key and address element 1 of an array, while ``-1`` or ``'01'`` are plain
names.  Dicts and lists passed as values are stored as nested maps, so deeper key
chains address inside them.  A map built from a list reads back as a list while its keys
are exactly ``0..n-1``; any other map (including one created implicitly by a deeper
``set``) reads back as a dict with str keys, integer keys first in ascending order, then
the others in insertion order (JavaScript's property order).  Values are JSON data;
reads return plain copies.

A missing value is :data:`gsc.core.protocol.UNDEFINED` (falsy, JavaScript's ``undefined``),
so a stored ``None`` (JSON null) stays distinguishable (``has_key`` is True for it).
Keys of another type (bool, None, dict, a non-integral float, an empty chain) raise
``InvalidArgumentsError``; so do non-integer indices where an array index is needed.

Expiry: ``expire(keys, seconds)`` gives each key chain the time
``round(now) + seconds``; :meth:`DataMap.purge_expired` removes the expired leaves only
(their parents remain).

Differences from the Node store, on purpose:

* ``exec``/``registerDeathQuery`` (run query source sent as a string) are not offered:
  they would be a remote-code hole in Python.
* ``count`` of any stored scalar is 1 (FlexiMap gave 0 for ``0``, ``''``, ``false`` and
  ``null``); ``add``/``concat`` treat only a missing value and ``None`` as missing
  (FlexiMap's ``concat`` also replaced ``0``, ``''`` and ``false``).
* ``'a'`` and ``['a']`` (or ``['x', 1]`` and ``['x', '1']``) are the same expiry key.
* ``remove_all`` also drops every expiry.
"""

import heapq
import math
import re
import time

from ..errors import InvalidArgumentsError
from .checks import is_int, is_number
from .protocol import UNDEFINED

_MAX_INDEX = 2 ** 32 - 2  # the largest JavaScript array index
_INDEX_TEXT = re.compile(r'(?:0|[1-9][0-9]*)\Z')
_INT_TEXT = re.compile(r'-?[0-9]+\Z')
_HOLE = object()  # an array slot without an element


class _Map:
    """One nested map: entries by key (int indices or str names), a JavaScript
    ``length`` (1 + the highest index, kept by ``remove`` as ``delete`` does) and whether
    it was built from a list."""

    __slots__ = ('items', 'length', 'as_array')

    def __init__(self, as_array=False):
        self.items = {}
        self.length = 0
        self.as_array = as_array

    def put(self, key, value):
        self.items[key] = value
        if type(key) is int and key >= self.length:
            self.length = key + 1

    def ordered_keys(self):
        """Keys in JavaScript's property order: indices ascending, then names."""
        indices = sorted(k for k in self.items if type(k) is int)
        return indices + [k for k in self.items if type(k) is str]

    def plain(self):
        """A plain copy: a list if built from a list without holes or names, else a dict."""
        items = self.items
        if self.as_array and len(items) == self.length and all(type(k) is int for k in items):
            return [_plain(items[i]) for i in range(self.length)]
        return {str(k): _plain(items[k]) for k in self.ordered_keys()}


def _plain(value):
    return value.plain() if isinstance(value, _Map) else value


def _wrap(value):
    """``value`` as stored: dicts and lists (tuples) become nested maps."""
    if isinstance(value, dict):
        node = _Map()
        for key, item in value.items():
            node.put(_norm(key), _wrap(item))
        return node
    if isinstance(value, (list, tuple)):
        node = _Map(as_array=True)
        node.items = {i: _wrap(item) for i, item in enumerate(value)}
        node.length = len(value)
        return node
    return value


def _is_collection(value):
    return isinstance(value, (dict, list, tuple))


def _norm(key):
    """One key as stored: an int for an array index, a str otherwise."""
    if isinstance(key, float) and key.is_integer():
        key = int(key)
    if is_int(key):
        return key if 0 <= key <= _MAX_INDEX else str(key)
    if isinstance(key, str):
        if _INDEX_TEXT.match(key) and int(key) <= _MAX_INDEX:
            return int(key)
        return key
    raise InvalidArgumentsError('Invalid key %r: a key must be a str or an int' % (key,))


def _chain(key):
    """The normalised key chain of ``key`` (a key or a non-empty list/tuple of keys)."""
    if isinstance(key, (list, tuple)):
        if not key:
            raise InvalidArgumentsError('A key chain must not be empty')
        return [_norm(k) for k in key]
    return [_norm(key)]


def head_key(key):
    """The top-level key (normalised) of ``key``, a key or a key chain; InvalidArgumentsError
    when it is not one."""
    return _chain(key)[0]


def _dump(value):
    """``value`` as stored, as JSON data: a map is ``{"a": built from a list, "n": its length,
    "i": [[key, value], ...]}`` (a dict is always a map: stored dicts are maps)."""
    if not isinstance(value, _Map):
        return value
    return {'a': value.as_array, 'n': value.length,
            'i': [[key, _dump(item)] for key, item in value.items.items()]}


def _undump(value):
    if not isinstance(value, dict):
        return value
    node = _Map(as_array=value['a'])
    node.items = {key: _undump(item) for key, item in value['i']}
    node.length = value['n']
    return node


def _int_arg(value, name):
    """An integer argument (int, integral float or integer text), else InvalidArgumentsError."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if is_int(value):
        return value
    if isinstance(value, str) and _INT_TEXT.match(value):
        return int(value)
    raise InvalidArgumentsError('Invalid %s %r: an integer is required' % (name, value))


def _name_arg(value, name):
    """A key as text, to find an object entry (``'2' == 2`` as in JavaScript)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        return str(value)
    raise InvalidArgumentsError('Invalid %s %r: a key must be a str or an int' % (name, value))


def _js_splice(array, start, delete_count, items=()):
    """``Array.prototype.splice`` on a Python list (negative start counts from the end)."""
    size = len(array)
    start = max(size + start, 0) if start < 0 else min(start, size)
    delete_count = max(0, min(delete_count, size - start))
    removed = array[start:start + delete_count]
    array[start:start + delete_count] = items
    return removed


def _object_range(value, from_index, to_index):
    """Keys of dict ``value`` from key ``from_index`` up to (excluding) key ``to_index``."""
    start = _name_arg(from_index, 'fromIndex')
    stop = None if to_index is None else _name_arg(to_index, 'toIndex')
    selected = []
    recording = False
    for key in value:
        recording = recording or key == start
        if recording:
            if key == stop:
                break
            selected.append(key)
    return selected


def _array_bounds(value, from_index, to_index):
    """``(from, to)`` of a list range: ``to`` clamped to the length, ``from`` below 0 is 0."""
    start = max(_int_arg(from_index, 'fromIndex'), 0)
    stop = len(value) if to_index is None else min(_int_arg(to_index, 'toIndex'), len(value))
    return start, stop


def _round_seconds(seconds):
    """JavaScript's ``Math.round`` (halves round up)."""
    return math.floor(seconds + 0.5)


class DataMap:
    """A broker's key/value store (FlexiMap semantics, as in sc-broker) with expiry.

    Methods raise ``InvalidArgumentsError`` for a bad key or index; a key chain that runs
    through a scalar or a missing entry reads as missing (``UNDEFINED``).
    """

    __slots__ = ('_root', '_expiry_of', '_keys_by_expiry', '_expiry_heap')

    def __init__(self):
        self._root = _Map()
        self._expiry_of = {}       # chain tuple -> expiry (unix seconds)
        self._keys_by_expiry = {}  # expiry -> set of chain tuples
        self._expiry_heap = []     # expiries with keys (stale entries are skipped)

    def __len__(self):
        """How many top-level keys the store holds."""
        return len(self._root.items)

    def _raw(self, chain):
        node = self._root
        for key in chain:
            if not isinstance(node, _Map):
                return UNDEFINED
            node = node.items.get(key, UNDEFINED)
        return node

    def _parent(self, chain, create=False):
        """The map holding the last key of ``chain`` (None if missing); ``create`` builds
        the intermediate maps, replacing scalars on the way."""
        node = self._root
        for key in chain[:-1]:
            child = node.items.get(key)
            if not isinstance(child, _Map):
                if not create:
                    return None
                child = _Map()
                node.put(key, child)
            node = child
        return node

    def export_entry(self, name):
        """Top-level key ``name`` (a normalised key: :func:`head_key`) as JSON data, exactly as
        stored, for a store kept outside the process: ``{'v': its value (absent when it has
        none), 'e': [[key chain, expiry], ...] (its expiries)}``; None when it holds neither."""
        entry = {'e': [[list(chain), expiry] for chain, expiry in self._expiry_of.items()
                       if chain[0] == name]}
        value = self._root.items.get(name, UNDEFINED)
        if value is not UNDEFINED:
            entry['v'] = _dump(value)
        return entry if entry['e'] or 'v' in entry else None

    def import_entry(self, name, entry):
        """Put back top-level key ``name`` from :meth:`export_entry`'s ``entry`` (entries
        imported in their insertion order keep JavaScript's property order)."""
        if 'v' in entry:
            self._root.put(name, _undump(entry['v']))
        for chain, expiry in entry['e']:
            self._set_expiries([tuple(chain)], expiry)

    def set(self, key, value):
        """Store ``value`` at ``key`` (creating intermediate maps); returns ``value``.

        Setting ``UNDEFINED`` removes the entry, as storing ``undefined`` hides it in JS.
        """
        chain = _chain(key)
        if value is UNDEFINED:
            self.remove(chain)
            return value
        self._parent(chain, create=True).put(chain[-1], _wrap(value))
        return value

    def get(self, key):
        """A plain copy of the value at ``key``; ``UNDEFINED`` if missing."""
        return _plain(self._raw(_chain(key)))

    def has_key(self, key):
        """Whether a value (``None`` included) is stored at ``key``."""
        return self._raw(_chain(key)) is not UNDEFINED

    def get_all(self):
        """A plain copy of the whole store (a dict)."""
        return self._root.plain()

    def count(self, key):
        """Entries of the map at ``key``; 1 for a scalar; 0 if missing."""
        value = self._raw(_chain(key))
        if isinstance(value, _Map):
            return len(value.items)
        return 0 if value is UNDEFINED else 1

    def get_range(self, key, from_index, to_index=None):
        """Part of the value at ``key``.

        A list gives its elements ``[from_index, to_index)`` (``to_index`` clamped to the
        length; indices must be integers); a dict gives its entries in key order from key
        ``from_index`` up to (excluding) key ``to_index``; anything else gives ``{}``.
        """
        value = self.get(key)
        if isinstance(value, list):
            start, stop = _array_bounds(value, from_index, to_index)
            return value[start:stop]
        if isinstance(value, dict):
            return {k: value[k] for k in _object_range(value, from_index, to_index)}
        return {}

    def remove_range(self, key, from_index, to_index=None):
        """Remove and return the part :meth:`get_range` selects (a list or a dict).

        The remaining value is stored again as a fresh list/dict (as FlexiMap does); a
        scalar or missing value is left alone and gives ``{}``.
        """
        chain = _chain(key)
        value = self.get(chain)
        if isinstance(value, list):
            start, stop = _array_bounds(value, from_index, to_index)
            removed = _js_splice(value, start, stop - start)
        elif isinstance(value, dict):
            removed = {k: value.pop(k) for k in _object_range(value, from_index, to_index)}
        else:
            return {}
        self.set(chain, value)
        return removed

    def add(self, key, value):
        """Append ``value`` at ``key``; returns its index.

        Missing (or None) -> ``[value]``, index 0; a scalar -> ``[scalar, value]``, index 1;
        a map -> stored at index ``length`` (its array length; 0 for a map of names only).
        """
        chain = _chain(key)
        target = self._raw(chain)
        if isinstance(target, _Map):
            index = target.length
            target.put(index, _wrap(value))
            return index
        if target is UNDEFINED or target is None:
            self.set(chain, [value])
            return 0
        self.set(chain, [target, value])
        return 1

    def concat(self, key, value):
        """Append the items of ``value`` (a non-collection counts as ``[value]``) at ``key``.

        Missing (or None) -> the value itself; a scalar -> ``[scalar, *items]`` (a dict
        value is one item); a map -> list items appended at its length, dict entries
        assigned by key.  Returns ``value`` (wrapped in a list if it was not a collection).
        """
        chain = _chain(key)
        if not _is_collection(value):
            value = [value]
        target = self._raw(chain)
        if target is UNDEFINED or target is None:
            self.set(chain, value)
        elif not isinstance(target, _Map):
            self.set(chain, [target, *value] if isinstance(value, (list, tuple)) else [target, value])
        elif isinstance(value, dict):
            for name, item in value.items():
                target.put(_norm(name), _wrap(item))
        else:
            start = target.length
            for offset, item in enumerate(value):
                target.put(start + offset, _wrap(item))
        return value

    def remove(self, key):
        """Delete the value at ``key``; returns a plain copy of it, ``UNDEFINED`` if missing.

        Removing an array element leaves a hole (JavaScript ``delete``): the array then
        reads back as a dict.  Use :meth:`splice` to close the gap.
        """
        chain = _chain(key)
        parent = self._parent(chain)
        if parent is None:
            return UNDEFINED
        return _plain(parent.items.pop(chain[-1], UNDEFINED))

    def remove_all(self):
        """Clear the store and every expiry."""
        self._root = _Map()
        self._expiry_of.clear()
        self._keys_by_expiry.clear()
        self._expiry_heap.clear()

    def splice(self, key, index=None, count=None, items=None):
        """``Array.prototype.splice`` on the map at ``key``; returns the removed items.

        As the broker client drops trailing missing arguments: only ``index`` deletes to
        the end; no ``index`` starts at 0; ``items`` without ``count`` deletes nothing;
        nothing at all removes nothing.  A negative ``index`` counts from the end.  A
        missing or scalar target gives ``[]``.  ``index``/``count`` must be integers and
        ``items`` a list.
        """
        chain = _chain(key)
        start = 0 if index is None else _int_arg(index, 'index')
        if items is None:
            items = []
        elif not isinstance(items, (list, tuple)):
            raise InvalidArgumentsError('Invalid items %r: a list is required' % (items,))
        target = self._raw(chain)
        if not isinstance(target, _Map):
            return []
        if count is not None:
            delete_count = _int_arg(count, 'count')
        elif index is not None and not items:
            delete_count = target.length
        else:
            delete_count = 0
        array = [target.items.get(i, _HOLE) for i in range(target.length)]
        removed = _js_splice(array, start, delete_count, [_wrap(item) for item in items])
        names = [(k, v) for k, v in target.items.items() if type(k) is str]
        target.items = {i: v for i, v in enumerate(array) if v is not _HOLE}
        target.items.update(names)
        target.length = len(array)
        return [_plain(item) for item in removed if item is not _HOLE]

    def pop(self, key):
        """Remove the last element of the array at ``key``; returns ``[last]`` (or ``[]``)."""
        return self.splice(key, -1, 1)

    def extract_keys(self, key):
        """The keys of the value at ``key`` as a list of str (``Object.keys``); ``[]`` for a
        scalar or a missing value."""
        value = self.get(key)
        if isinstance(value, list):
            return [str(i) for i in range(len(value))]
        return list(value) if isinstance(value, dict) else []

    def extract_values(self, key):
        """The values of the value at ``key`` as a list; ``[]`` for a scalar or a missing value."""
        value = self.get(key)
        if isinstance(value, list):
            return value
        return list(value.values()) if isinstance(value, dict) else []

    @staticmethod
    def _expiry_keys(keys):
        if not isinstance(keys, (list, tuple)):
            raise InvalidArgumentsError('Invalid keys %r: a list of key chains is required' % (keys,))
        return [tuple(_chain(key)) for key in keys]

    def expire(self, keys, seconds, now=None):
        """Give each key chain of ``keys`` the expiry ``round(now) + seconds`` (unix seconds;
        ``now`` defaults to the current time).  A key need not exist yet."""
        if not is_number(seconds):
            raise InvalidArgumentsError('Invalid expiry %r: a number of seconds is required' % (seconds,))
        chains = self._expiry_keys(keys)
        self._unexpire(chains)
        self._set_expiries(chains, _round_seconds(time.time() if now is None else now) + seconds)

    def _set_expiries(self, chains, expiry):
        bucket = self._keys_by_expiry.get(expiry)
        if bucket is None:
            bucket = self._keys_by_expiry[expiry] = set()
            heapq.heappush(self._expiry_heap, expiry)
        for chain in chains:
            self._expiry_of[chain] = expiry
            bucket.add(chain)

    def unexpire(self, keys):
        """Cancel the expiry of each key chain of ``keys``."""
        self._unexpire(self._expiry_keys(keys))

    def _unexpire(self, chains):
        for chain in chains:
            expiry = self._expiry_of.pop(chain, None)
            if expiry is None:
                continue
            bucket = self._keys_by_expiry[expiry]
            bucket.discard(chain)
            if not bucket:
                del self._keys_by_expiry[expiry]

    def get_expiry(self, key):
        """The expiry time (unix seconds) of ``key``, None if it has none."""
        return self._expiry_of.get(tuple(_chain(key)))

    def purge_expired(self, now=None):
        """Remove every value whose expiry is ``<= round(now)`` (just the leaf: parents
        remain) and forget those expiries; returns the purged key chains (lists)."""
        now = _round_seconds(time.time() if now is None else now)
        purged = []
        heap = self._expiry_heap
        while heap and heap[0] <= now:
            bucket = self._keys_by_expiry.pop(heapq.heappop(heap), ())
            for chain in bucket:
                del self._expiry_of[chain]
                self.remove(list(chain))
                purged.append(list(chain))
        return purged
