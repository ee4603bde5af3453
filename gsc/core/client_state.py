"""What a SocketCluster client decides, without I/O: the rules both Python clients follow.

:mod:`gsc.client` (gevent) and :mod:`gsc.aio` (asyncio) call these functions, so they answer
a handshake, reconnect, read a token and recover a history channel the same way
(docs/protocol.md, docs/history.md):

- the events a client emits itself, which it refuses to send to the server;
- the auto-reconnect policy of socketcluster-client: which close codes reconnect, and the
  back-off delay (``initialDelay``, ``randomness``, ``multiplier``, ``maxDelay``, in ms);
- the handshake answer (the token sent, the ``authError`` hydrated, the close code of a
  refusal) and the ``#authenticate`` answer;
- the JWT payload, read without verification;
- the position ``(offset, epoch)`` of a history channel and the ``#subscribe`` data that
  asks to recover after it.
"""

import base64
import random
from urllib.parse import urlencode

from . import codec
from .protocol import AUTHENTICATED, UNAUTHENTICATED
from ..errors import BadConnectionError, CloseCode, error_message, error_name, hydrate

PENDING = 'pending'
SUBSCRIBED = 'subscribed'
UNSUBSCRIBED = 'unsubscribed'

# Event names the client emits itself: emit() refuses to send them (B-089, docs/behaviours-coverage.md).
LOCAL_EVENTS = frozenset((
    'connect', 'connectAbort', 'connecting', 'close', 'disconnect', 'message', 'error', 'raw',
    'kickOut', 'subscribe', 'unsubscribe', 'subscribeFail', 'subscribeStateChange',
    'subscribeRequest', 'authStateChange', 'authenticate', 'deauthenticate', 'removeAuthToken',
    'recovery'))

# close codes from here up tell the client not to reconnect (as socketcluster-client)
NO_RECONNECT_CODES = 4500
# close codes after which the first reconnect is immediate
IMMEDIATE_RECONNECT_CODES = frozenset((CloseCode.SERVER_PING_TIMEOUT, CloseCode.CLIENT_PONG_TIMEOUT,
                                       CloseCode.NO_STATUS))
DEFAULT_RECONNECT_OPTIONS = {'initialDelay': 10000, 'randomness': 10000, 'multiplier': 1.5,
                             'maxDelay': 60000}
_RECONNECT_ALIASES = {'initial_delay': 'initialDelay', 'max_delay': 'maxDelay'}


def reconnect_options(overrides=None):
    """The back-off options: the defaults with ``overrides`` (JS keys, or ``initial_delay``
    and ``max_delay``)."""
    options = dict(DEFAULT_RECONNECT_OPTIONS)
    for key, value in (overrides or {}).items():
        options[_RECONNECT_ALIASES.get(key, key)] = value
    return options


def reconnects_after(code):
    """The ``initial_delay`` for :func:`reconnect_delay` after a close with ``code``: 0 for
    a ping timeout or a close without status, None for a back-off; False: no reconnect
    (1000, or a code from 4500 up)."""
    if code in IMMEDIATE_RECONNECT_CODES:
        return 0
    if code != CloseCode.NORMAL and code < NO_RECONNECT_CODES:
        return None
    return False


def reconnect_delay(options, attempt, initial_delay=None):
    """Milliseconds before reconnect ``attempt`` (0 for the first since the last open):
    ``initial_delay`` for a first attempt when given, else socketcluster-client's back-off,
    capped by ``maxDelay`` (docs/protocol.md)."""
    if initial_delay is None or attempt > 0:
        first = round(options['initialDelay'] + (options['randomness'] or 0) * random.random())
        delay = round(first * options['multiplier'] ** attempt)
    else:
        delay = initial_delay
    return min(delay, options['maxDelay'])


def client_uri(hostname, port, path, secure, query):
    """The WebSocket URL of a client: ``ws[s]://host:port/path/[?query]`` (``query`` a dict
    or a string)."""
    host = '[%s]' % hostname if ':' in hostname else hostname
    uri = '%s://%s:%s%s' % ('wss' if secure else 'ws', host, port, normal_path(path))
    query = normal_query(query)
    return uri + '?' + query if query else uri


def normal_path(path):
    """``path`` with one trailing slash, as socketcluster-client sends it."""
    return (path or '/').rstrip('/') + '/'


def normal_query(query):
    """The query string of ``query`` (a dict or a string), without its ``?``."""
    if isinstance(query, dict):
        query = urlencode(query, doseq=True)
    return (query or '').lstrip('?')


def is_error_named(err, name):
    """True when ``err`` carries SocketCluster's error name ``name``."""
    return err is not None and error_name(err) == name


def error_string(err):
    """JavaScript's ``String(err)``: ``"<name>: <message>"``."""
    if isinstance(err, BaseException):
        return '%s: %s' % (error_name(err) or 'Error', error_message(err))
    return str(err)


def bad_connection(event, failure):
    """The error of a call to ``event`` aborted by a closing connection (``failure``:
    ``'connectAbort'`` before the handshake, ``'disconnect'`` after)."""
    return BadConnectionError("Event '%s' was aborted due to a bad connection" % event,
                              type=failure)


def handshake_status(status, token):
    """The handshake answer as the client reports it: the token it sent as ``authToken`` and
    the ``authError`` hydrated; None when the answer is not an object."""
    if not isinstance(status, dict):
        return None
    status['authToken'] = token
    if status.get('authError'):
        status['authError'] = hydrate(status['authError'])
    return status


def handshake_close_code(status):
    """The close code after a refused handshake: the one the server gave, or 4003."""
    return (status.get('code') if isinstance(status, dict) else None) or CloseCode.HANDSHAKE_FAILED


def ping_timeout(status, current):
    """Seconds without a frame before the client gives up: the server's ``pingTimeout`` (ms)
    from the handshake answer, else ``current``."""
    value = status.get('pingTimeout')
    return value / 1000.0 if isinstance(value, (int, float)) else current


def authenticate_outcome(err, status, auth_state):
    """``(status, new_state)`` after an ``#authenticate`` answer: the status with its
    ``authError`` hydrated (the known state when the answer had none), and the auth state
    to move to, None to keep it (a dropped connection or a timeout)."""
    if isinstance(status, dict) and status.get('isAuthenticated') is not None:
        if status.get('authError'):
            status['authError'] = hydrate(status['authError'])
    else:  # no status from a dropped connection or a timeout: keep the known state
        status = {'isAuthenticated': auth_state == AUTHENTICATED, 'authError': None}
    if err:
        if is_error_named(err, 'BadConnectionError') or is_error_named(err, 'TimeoutError'):
            return status, None
        return status, UNAUTHENTICATED
    return status, AUTHENTICATED if status['isAuthenticated'] else UNAUTHENTICATED


def extract_token(signed):
    """The JWT payload, base64-decoded without verification (a string if not JSON)."""
    parts = (signed or '').split('.') if isinstance(signed, str) else ()
    if len(parts) < 2:
        return None
    text = parts[1].replace('+', '-').replace('/', '_')
    try:
        text = base64.urlsafe_b64decode(text + '=' * (-len(text) % 4)).decode('utf-8')
    except (ValueError, UnicodeDecodeError):
        return parts[1]
    return codec.decode(text)


def enter_authenticated(client, signed):
    """Set ``client.signed_auth_token``, ``client.auth_token`` (its payload) and
    ``client.auth_state`` for the token ``signed``: the ``authStateChange`` object when the
    state changed, else None."""
    client.signed_auth_token = signed
    client.auth_token = extract_token(signed)
    if client.auth_state == AUTHENTICATED:
        return None
    old, client.auth_state = client.auth_state, AUTHENTICATED
    return {'oldState': old, 'newState': AUTHENTICATED, 'signedAuthToken': signed,
            'authToken': client.auth_token}


def enter_unauthenticated(client):
    """Clear the token of ``client`` and set its ``auth_state`` unauthenticated:
    ``(authStateChange object, old signed token)`` when the state changed, else None."""
    if client.auth_state == UNAUTHENTICATED:
        return None
    old, old_signed = client.auth_state, client.signed_auth_token
    client.auth_state = UNAUTHENTICATED
    client.signed_auth_token = client.auth_token = None
    return {'oldState': old, 'newState': UNAUTHENTICATED}, old_signed


def server_disconnect(data):
    """``(code, data)`` of a ``#disconnect`` from the server (1000 without a code)."""
    data = data if isinstance(data, dict) else {}
    code = data.get('code')
    return (code if isinstance(code, int) and code else CloseCode.NORMAL), data.get('data')


def decorate(prefix, name):
    """The channel name on the wire: ``name`` behind the client's ``channel_prefix``."""
    return prefix + name if prefix else name


def undecorate(prefix, name):
    """The channel name of a wire name: without the client's ``channel_prefix``."""
    if prefix and isinstance(name, str) and name.startswith(prefix):
        return name[len(prefix):]
    return name


def publication_position(publication):
    """``(offset, epoch)`` of a ``#publish`` on a history channel; None without an offset."""
    offset = publication.get('offset')
    return None if offset is None else (offset, publication.get('epoch'))


def recovered_position(position, result):
    """The position after a ``#recovery`` ``result``: the channel's latest when ``position``
    is behind it or of another epoch, else ``position``."""
    offset, epoch = result.get('offset'), result.get('epoch')
    if isinstance(offset, int) and epoch is not None and (
            position is None or position[1] != epoch or position[0] < offset):
        return (offset, epoch)
    return position


def subscribe_data(channel, wait_for_auth=False, data=None, position=None, batch=False):
    """The data of a ``#subscribe`` of the wire name ``channel``; with a ``position`` (and
    dict or no ``data``) it asks to recover what came after it."""
    options = {'channel': channel}
    if wait_for_auth:
        options['waitForAuth'] = True
    if data:
        options['data'] = data
    if position is not None and (data is None or isinstance(data, dict)):
        offset, epoch = position
        options['data'] = dict(data or {}, recover={'offset': offset, 'epoch': epoch})
    if batch:
        options['batch'] = True
    return options


def subscribe_change(name, old_state, new_state, options=None):
    """The ``subscribeStateChange`` event's object (with ``subscriptionOptions`` when
    subscribed)."""
    change = {'channel': name, 'oldState': old_state, 'newState': new_state}
    if options is not None:
        change['subscriptionOptions'] = options
    return change
