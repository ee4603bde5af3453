"""sc-hasher: which broker owns a channel name, a key/value key or a ``mapIndex``.

``hash_key(key, brokers)`` gives the same index as SocketCluster's sc-hasher 1.0.1
(SocketCluster's sc-hasher): Java's ``String.hashCode`` over the UTF-16 code units of the key,
a signed 32-bit result, then ``abs(h) % modulo``.  Pure; no I/O.

The hash of a long key is computed with big-integer arithmetic (C loops) rather than
one Python step per UTF-16 unit: the units are read as one integer of 16-bit slots,
adjacent slots are combined twice (``a*31 + b``, then ``a*31**2 + b``, exact, into
64-bit slots), then the upper half of the slots is folded onto the lower half
(``high * 31**k + low`` mod 2**32 in every slot) until one slot is left.
"""

import json
import math
import sys

from ..errors import InvalidArgumentsError
from .checks import is_int, is_number

_UTF16_NATIVE = 'utf-16-le' if sys.byteorder == 'little' else 'utf-16-be'
LOW16 = 0xFFFF
LOW32 = 0xFFFFFFFF
SHORT_KEY = 16
"""Below this many UTF-16 units a plain loop is faster than the slot arithmetic."""
MASK_CACHE_BITS = 1 << 21
"""Slot masks up to this many bits (keys up to 128 Ki units; 512 KiB at most) are kept."""
_masks: dict = {}


def _json_text(value):
    """``JSON.stringify(value)``; None when it cannot be serialised."""
    try:
        return json.dumps(value, separators=(',', ':'), ensure_ascii=False)
    except (TypeError, ValueError):
        return None


def string_hash(text):
    """Java's ``String.hashCode`` of ``text`` (signed int32 over UTF-16 code units)."""
    if len(text) < SHORT_KEY:
        h = _loop_hash(text)
    else:
        h = _slot_hash(text.encode('utf-16-be', 'surrogatepass'))
    return h - 0x100000000 if h & 0x80000000 else h


def _loop_hash(text):
    """The unsigned hash, one UTF-16 unit at a time."""
    h = 0
    for unit in memoryview(text.encode(_UTF16_NATIVE, 'surrogatepass')).cast('H'):
        h = (h * 31 + unit) & LOW32
    return h


def _slot_hash(units):
    """The unsigned hash of big-endian UTF-16 ``units`` through whole-integer operations."""
    count = len(units) // 2
    bits = 16 * count
    value = int.from_bytes(units, 'big')  # 16-bit slots, the last unit lowest
    mask = _repeated(LOW16, 32, bits)
    value = ((value >> 16) & mask) * 31 + (value & mask)  # pairs, < 2**21 in 32-bit slots
    mask = _repeated(LOW32, 64, bits)
    value = ((value >> 32) & mask) * 961 + (value & mask)  # quads, < 2**31 in 64-bit slots
    slots = (count + 3) // 4
    while slots > 1:
        low = (slots + 1) // 2
        high = value >> (64 * low)
        # each slot: (< 2**32) * (< 2**32) + (< 2**32) stays below 2**64, so no carry
        # reaches the next slot before the mask takes the low 32 bits again
        value = (high * pow(31, 4 * low, 1 << 32) + (value & ((1 << (64 * low)) - 1))) & mask
        slots = low
    return value & LOW32


def _repeated(pattern, stride, bits):
    """``pattern`` repeated every ``stride`` bits over at least ``bits`` bits (cached)."""
    mask, span = _masks.get((pattern, stride), (pattern, stride))
    if span >= bits:
        return mask
    while span < bits:
        mask |= mask << span
        span *= 2
    if span <= MASK_CACHE_BITS:
        _masks[(pattern, stride)] = (mask, span)
    return mask


def hash_key(key, modulo):
    """The index in ``range(modulo)`` that owns ``key``.

    * a number (not a bool) is used directly: ``abs(key) % modulo`` (a float uses its
      integer part; NaN and infinities give 0);
    * a list/tuple uses its first element; a non-string (bool, dict, list, ...) uses
      its JSON text; None, an empty array, an unserialisable value and ``''`` give 0;
    * a string is hashed with :func:`string_hash`, then ``abs(h) % modulo``.

    ``modulo`` must be a positive int, otherwise ``InvalidArgumentsError``.
    """
    if not is_int(modulo) or modulo < 1:
        raise InvalidArgumentsError('The hash modulo must be a positive integer, got %r' % (modulo,))
    if modulo == 1:
        return 0
    if is_number(key):
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
