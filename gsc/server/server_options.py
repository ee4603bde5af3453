"""The options of an SCServer: defaults (SocketCluster's SCServer options), key spellings, validation.

Keys are SocketCluster's camelCase strings; snake_case spellings are accepted and
converted.  A bad value raises :class:`InvalidOptionsError` naming the option.
"""

import re

from ..errors import InvalidOptionsError

MAX_TIMEOUT = 2147483647

SERVER_DEFAULTS = {
    'path': '/socketcluster/',
    'ackTimeout': 10000,
    'handshakeTimeout': 10000,
    'pingInterval': 8000,
    'pingTimeout': 20000,
    'pingTimeoutDisabled': False,
    'origins': '*:*',
    'appName': None,
    'authKey': None,
    'authPrivateKey': None,
    'authPublicKey': None,
    'authAlgorithm': None,
    'authVerifyAlgorithms': None,
    'authDefaultExpiry': 86400,
    'authSignAsync': False,
    'authVerifyAsync': True,
    'authEngine': None,
    'codecEngine': None,
    'allowClientPublish': True,
    'socketChannelLimit': None,
    'pubSubBatchDuration': None,
    'middlewareEmitWarnings': True,
    'maxPayload': 1024 * 1024,
    'maxBatchPackets': 1000,
    'maxChannelNameLength': 1024,
    'maxOutboundBytes': 16 * 1024 * 1024,
    'maxConnections': None,
    'headersTimeout': 10000,
    'maxHeaderSize': 16 * 1024,
    'perMessageDeflate': None,
    'strictHandshake': True,
    'brokerEngine': 'simple',
    'brokerEngineOptions': None,
}

DEFLATE_OPTIONS = {'serverNoContextTakeover': 'server_no_context_takeover',
                   'clientNoContextTakeover': 'client_no_context_takeover',
                   'serverMaxWindowBits': 'server_max_window_bits',
                   'clientMaxWindowBits': 'client_max_window_bits'}
"""perMessageDeflate settings (ws's names) and the arguments of websockets' deflate factory."""

DURATIONS = ('ackTimeout', 'handshakeTimeout', 'pingInterval', 'pingTimeout', 'headersTimeout')
LIMITS = ('maxBatchPackets', 'maxChannelNameLength', 'maxOutboundBytes', 'maxHeaderSize')
"""Positive whole-number limits (packets, characters, bytes)."""
BOOLEANS = ('pingTimeoutDisabled', 'allowClientPublish', 'middlewareEmitWarnings', 'strictHandshake')
_SNAKE = re.compile(r'_([a-z0-9])')


def to_camel(key):
    """``ping_timeout`` -> ``pingTimeout``; camelCase keys are returned unchanged."""
    return _SNAKE.sub(lambda m: m.group(1).upper(), key) if '_' in key else key


def camel_keys(options):
    """A copy of ``options`` with every key in SocketCluster's camelCase spelling."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise InvalidOptionsError('The options must be a dict, not %s' % type(options).__name__)
    return {to_camel(key): value for key, value in options.items()}


def normalise_path(path):
    """Exactly one leading and one trailing slash."""
    return '/' + path.strip('/') + '/' if path.strip('/') else '/'


def check_number(options, key, minimum=0, maximum=MAX_TIMEOUT, allow_none=False):
    """Raise InvalidOptionsError unless ``options[key]`` is a number in range."""
    value = options.get(key)
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOptionsError('The %s option must be a number, not %r' % (key, value))
    if value > maximum:
        raise InvalidOptionsError('The %s value provided exceeded the maximum amount allowed' % key)
    if value < minimum:
        raise InvalidOptionsError('The %s option must be at least %s, not %r' % (key, minimum, value))


def normalise_server_options(options):
    """The server defaults overlaid with ``options``, checked; other keys are kept."""
    merged = dict(SERVER_DEFAULTS)
    merged.update(camel_keys(options))
    for key in DURATIONS:
        check_number(merged, key, minimum=1)
    check_number(merged, 'authDefaultExpiry', minimum=1)
    check_number(merged, 'socketChannelLimit', minimum=0, maximum=float('inf'), allow_none=True)
    check_number(merged, 'pubSubBatchDuration', allow_none=True)
    check_number(merged, 'maxPayload', minimum=1, maximum=float('inf'), allow_none=True)
    for key in LIMITS:
        check_number(merged, key, minimum=1, maximum=float('inf'))
    check_number(merged, 'maxConnections', minimum=1, maximum=float('inf'), allow_none=True)
    for key in BOOLEANS:
        if not isinstance(merged[key], bool):
            raise InvalidOptionsError('The %s option must be true or false, not %r' % (key, merged[key]))
    deflate = merged['perMessageDeflate']
    if deflate not in (None, False, True) and not (
            isinstance(deflate, dict) and set(deflate) <= set(DEFLATE_OPTIONS)):
        raise InvalidOptionsError('The perMessageDeflate option must be true, false or a dict of %s'
                                  % ', '.join(DEFLATE_OPTIONS))
    if not isinstance(merged['path'], str):
        raise InvalidOptionsError('The path option must be a string, not %r' % (merged['path'],))
    merged['path'] = normalise_path(merged['path'])
    origins = merged['origins']
    if isinstance(origins, str):
        merged['origins'] = origins.replace(',', ' ').split()
    elif isinstance(origins, (list, tuple)) and all(isinstance(o, str) for o in origins):
        merged['origins'] = list(origins)
    else:
        raise InvalidOptionsError('The origins option must be a string or a list of strings')
    return merged
