"""sc-hasher: which broker owns a channel name, a key/value key or a ``mapIndex``.

``hash_key(key, brokers)`` gives the same index as SocketCluster's sc-hasher 1.0.1
(master-api.md §8): Java's ``String.hashCode`` over the UTF-16 code units of the key,
a signed 32-bit result, then ``abs(h) % modulo``.  Pure; no I/O.
"""

import json
import math
import sys

from .errors import InvalidArgumentsError

_UTF16_NATIVE = 'utf-16-le' if sys.byteorder == 'little' else 'utf-16-be'


def _json_text(value):
    """``JSON.stringify(value)``; None when it cannot be serialised."""
    try:
        return json.dumps(value, separators=(',', ':'), ensure_ascii=False)
    except (TypeError, ValueError):
        return None


def string_hash(text):
    """Java's ``String.hashCode`` of ``text`` (signed int32 over UTF-16 code units)."""
    h = 0
    for unit in memoryview(text.encode(_UTF16_NATIVE, 'surrogatepass')).cast('H'):
        h = (h * 31 + unit) & 0xFFFFFFFF
    return h - 0x100000000 if h & 0x80000000 else h


def hash_key(key, modulo):
    """The index in ``range(modulo)`` that owns ``key``.

    * a number (not a bool) is used directly: ``abs(key) % modulo`` (a float uses its
      integer part; NaN and infinities give 0);
    * a list/tuple uses its first element; a non-string (bool, dict, list, ...) uses
      its JSON text; None, an empty array, an unserialisable value and ``''`` give 0;
    * a string is hashed with :func:`string_hash`, then ``abs(h) % modulo``.

    ``modulo`` must be a positive int, otherwise ``InvalidArgumentsError``.
    """
    if isinstance(modulo, bool) or not isinstance(modulo, int) or modulo < 1:
        raise InvalidArgumentsError('The hash modulo must be a positive integer, got %r' % (modulo,))
    if isinstance(key, (int, float)) and not isinstance(key, bool):
        if isinstance(key, float):
            if not math.isfinite(key):
                return 0
            key = int(key)
        return abs(key) % modulo
    if isinstance(key, (list, tuple)):
        key = key[0] if key else None
    if key is not None and not isinstance(key, str):
        key = _json_text(key)
    if not key:
        return 0
    return abs(string_hash(key)) % modulo
