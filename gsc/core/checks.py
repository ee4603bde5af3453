"""Checks of values from outside: numbers that are not bools, and options in range.

JSON's ``true`` is Python's ``True``, an ``int``: every "a number" check here refuses bools.
"""

from ..errors import InvalidOptionsError

MAX_TIMEOUT = 2147483647
"""The longest duration (ms) an option may give (SocketCluster's limit, a 32-bit timer)."""


def is_number(value):
    """True for an int or a float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value):
    """True for an int, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_number(options, key, minimum=0, maximum=MAX_TIMEOUT, allow_none=False, whole=False):
    """Raise InvalidOptionsError unless ``options[key]`` is a number (an int when ``whole``)
    from ``minimum`` to ``maximum`` (or None when ``allow_none``)."""
    value = options.get(key)
    if value is None and allow_none:
        return
    if not (is_int(value) if whole else is_number(value)):
        raise InvalidOptionsError('The %s option must be a %s, not %r'
                                  % (key, 'whole number' if whole else 'number', value))
    if value > maximum:
        raise InvalidOptionsError('The %s value provided exceeded the maximum amount allowed' % key)
    if value < minimum:
        raise InvalidOptionsError('The %s option must be at least %s, not %r' % (key, minimum, value))
