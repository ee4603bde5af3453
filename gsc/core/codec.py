"""The default codec (sc-formatter): JSON text frames, with the ping/pong strings verbatim.

All encoding and decoding of gsc goes through this module, so a faster codec can be
swapped in one place.  Output is compact, keeps non-ASCII characters raw and never
writes NaN or Infinity (they become null), as the reference does.  A lone surrogate
(``"\\ud800"`` from a client's JSON) is written as its ``\\uXXXX`` escape, as JavaScript's
``JSON.stringify`` does, so every output is valid UTF-8 and parses back to the same string.
"""

import base64
import math
import re

import ujson

PING = '#1'
PONG = '#2'
MAX_FRAME = 64 * 1024 * 1024
"""The largest encoded message gsc passes between its own processes: a frame of a link
between processes (bigger outbound messages are refused, a bigger inbound frame is a protocol
violation that closes the link) and a publish through Redis."""
_JSON_START = frozenset('{[')
_WHITESPACE = ' \n\r\t'
_SURROGATE = re.compile('[\ud800-\udfff]')


def _binary_default(value):
    """ujson's fallback: binary values become {"base64": true, "data": ...}."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {'base64': True, 'data': base64.b64encode(bytes(value)).decode('ascii')}
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError('%r is not JSON serializable' % (value,))


def _without_nan(value):
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(v) for v in value]
    return value


def _escape_surrogate(match):
    return '\\u%04x' % ord(match.group())


def _well_formed(text):
    """``text`` with every surrogate escaped, when it has one (it cannot be UTF-8 encoded).

    A surrogate only occurs inside a JSON string (the syntax is ASCII), where its escape
    means the same UTF-16 unit; a pair kept as two code points becomes two escapes, which
    JSON parsers join back into one character."""
    try:
        text.encode('utf-8')
    except UnicodeEncodeError:
        return _SURROGATE.sub(_escape_surrogate, text)
    return text


def encode(obj):
    """``obj`` as compact JSON text that encodes to UTF-8; ValueError for a circular or
    unencodable value."""
    try:
        text = ujson.dumps(obj, ensure_ascii=False, escape_forward_slashes=False,
                           allow_nan=False, default=_binary_default)
    except OverflowError as exc:
        if 'recursion' in str(exc):
            raise ValueError('Converting circular structure to JSON') from None
        text = ujson.dumps(_without_nan(obj), ensure_ascii=False, escape_forward_slashes=False,
                           default=_binary_default)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    return text if text.isascii() else _well_formed(text)


def decode(frame):
    """A packet from a frame (str or bytes); never raises: what is not JSON stays a string."""
    if isinstance(frame, (bytes, bytearray, memoryview)):
        try:
            frame = bytes(frame).decode('utf-8')
        except UnicodeDecodeError:
            return bytes(frame)
    if frame == PING or frame == PONG:
        return frame
    head = frame.lstrip(_WHITESPACE)[:1]
    if head not in _JSON_START:
        return frame
    try:
        return ujson.loads(frame)
    except (ValueError, OverflowError):
        return frame


def decode_json(text):
    """Strict JSON decoding for gsc's own links (engines, IPC): ValueError on bad input."""
    return ujson.loads(text)
