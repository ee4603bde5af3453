"""The errors of sc-errors, their wire form (dehydration) and back (hydration).

Every error class carries SocketCluster's own ``name`` string, so a client sees the
same names as with the Node server.  Any other exception dehydrates to
``{"message": ..., "name": <class name>}``; a plain ``Exception`` to ``{"message": ...}``.
"""

import traceback
from enum import IntEnum

SKIPPED_FIELDS = frozenset(('domain', 'domainEmitter', 'domainThrown', 'args'))


class SCError(Exception):
    """Base of every gsc error: a ``name``, a ``message`` and optional extra fields."""

    name = 'Error'

    def __init__(self, message='', **fields):
        super().__init__(message)
        self.message = message
        for key, value in fields.items():
            setattr(self, key, value)

    def __str__(self):
        return self.message


class AuthTokenExpiredError(SCError):
    """The JWT has expired (``expiry`` field)."""

    name = 'AuthTokenExpiredError'


class AuthTokenInvalidError(SCError):
    """The JWT is malformed, missing or badly signed."""

    name = 'AuthTokenInvalidError'


class AuthTokenNotBeforeError(SCError):
    """The JWT is not valid yet (``date`` field)."""

    name = 'AuthTokenNotBeforeError'


class AuthTokenError(SCError):
    """Any other token failure."""

    name = 'AuthTokenError'


class AuthError(SCError):
    """A generic authentication failure (sc-errors 2.x)."""

    name = 'AuthError'


class SilentMiddlewareBlockedError(SCError):
    """A middleware blocked an action silently."""

    name = 'SilentMiddlewareBlockedError'


class InvalidActionError(SCError):
    """An action that is not allowed in the current state."""

    name = 'InvalidActionError'


class InvalidArgumentsError(SCError):
    """A call with bad arguments."""

    name = 'InvalidArgumentsError'


class InvalidOptionsError(SCError):
    """A bad configuration value."""

    name = 'InvalidOptionsError'


class InvalidMessageError(SCError):
    """A message that cannot be understood."""

    name = 'InvalidMessageError'


class SocketProtocolError(SCError):
    """A socket closed with a non-normal code (``code`` field)."""

    name = 'SocketProtocolError'


class ServerProtocolError(SCError):
    """A server-side protocol failure (bad origin, ...)."""

    name = 'ServerProtocolError'


class HTTPServerError(SCError):
    """An error of the worker HTTP server."""

    name = 'HTTPServerError'


class ResourceLimitError(SCError):
    """A process exceeded a resource limit."""

    name = 'ResourceLimitError'


class TimeoutError(SCError):  # noqa: A001 (SocketCluster's name)
    """An answer did not arrive in time."""

    name = 'TimeoutError'


class RateLimitError(SCError):
    """A socket sent more than its inbound rate limits allow (gsc's own error)."""

    name = 'RateLimitError'


class BadConnectionError(SCError):
    """A pending call aborted by a closing connection."""

    name = 'BadConnectionError'


class BrokerError(SCError):
    """A pub/sub or broker failure."""

    name = 'BrokerError'


class ProcessExitError(SCError):
    """A child process exited (``code``, ``signal`` fields)."""

    name = 'ProcessExitError'


class UnknownError(SCError):
    """A non-error value that was thrown or emitted."""

    name = 'UnknownError'


ERROR_CLASSES = {cls.name: cls for cls in (
    AuthTokenExpiredError, AuthTokenInvalidError, AuthTokenNotBeforeError, AuthTokenError,
    AuthError, SilentMiddlewareBlockedError, InvalidActionError, InvalidArgumentsError,
    InvalidOptionsError, InvalidMessageError, SocketProtocolError, ServerProtocolError,
    HTTPServerError, ResourceLimitError, TimeoutError, BadConnectionError, BrokerError, RateLimitError,
    ProcessExitError, UnknownError)}

class CloseCode(IntEnum):
    """The WebSocket close codes gsc and SocketCluster use, named by their sc-errors texts
    (docs/protocol.md, Closing)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    INVALID_DATA = 1003
    NO_STATUS = 1005
    ABNORMAL = 1006
    INVALID_MESSAGE_FORMAT = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MISSING_EXTENSION = 1010
    UNEXPECTED_CONDITION = 1011
    TRY_AGAIN_LATER = 1013
    SERVER_PING_TIMEOUT = 4000
    CLIENT_PONG_TIMEOUT = 4001
    AUTH_TOKEN_SIGN_FAILED = 4002
    HANDSHAKE_FAILED = 4003
    AUTH_TOKEN_SAVE_FAILED = 4004
    HANDSHAKE_TIMEOUT = 4005
    BROKER_BIND_FAILED = 4006
    CONNECT_TIMEOUT = 4007
    HANDSHAKE_REJECTED = 4008
    MESSAGE_BEFORE_HANDSHAKE = 4009
    RATE_LIMITED = 4429  # gsc's own: over the inbound rate limits for longer than their grace


# Close codes: the texts of sc-errors (docs/protocol.md, Closing).
SOCKET_PROTOCOL_ERROR_STATUSES = {
    1001: 'Socket was disconnected',
    1002: 'A WebSocket protocol error was encountered',
    1003: 'Server terminated socket because it received invalid data',
    1005: 'Socket closed without status code',
    1006: 'Socket hung up',
    1007: 'Message format was incorrect',
    1008: 'Encountered a policy violation',
    1009: 'Message was too big to process',
    1010: 'Client ended the connection because the server did not comply with extension requirements',
    1011: 'Server encountered an unexpected fatal condition',
    4000: 'Server ping timed out',
    4001: 'Client pong timed out',
    4002: 'Server failed to sign auth token',
    4003: 'Failed to complete handshake',
    4004: 'Client failed to save auth token',
    4005: 'Did not receive #handshake from client before timeout',
    4006: 'Failed to bind socket to message broker',
    4007: 'Client connection establishment timed out',
    4008: 'Server rejected handshake from client',
    4009: 'Server received a message before the client handshake',
}
SOCKET_PROTOCOL_IGNORE_STATUSES = {1000: 'Socket closed normally', 1001: 'Socket hung up'}


def error_name(err):
    """The SocketCluster name of ``err``: its ``name`` attribute, else its class name."""
    name = getattr(err, 'name', None)
    if isinstance(name, str):
        return name
    return None if type(err) is Exception else type(err).__name__


def error_message(err):
    """The message text of ``err``."""
    message = getattr(err, 'message', None)
    if isinstance(message, str):
        return message
    return str(err)


def close_error(code, data=None):
    """The SocketProtocolError a socket reports when it closes with ``code`` (None for 1000/1001)."""
    if code in SOCKET_PROTOCOL_IGNORE_STATUSES:
        return None
    message = SOCKET_PROTOCOL_ERROR_STATUSES.get(code)
    if message is None:
        message = 'Socket connection closed with status code %s' % code
        if data is not None:
            message += ' and reason: ' + _render(data)
    return SocketProtocolError(message, code=code)


def dehydrate(err, include_stack=False):
    """The wire form of ``err``: a dict for exceptions, the value itself otherwise."""
    if err is None or isinstance(err, (str, int, float, bool)):
        return err
    if callable(err) and not isinstance(err, BaseException):
        return '[function %s]' % (getattr(err, '__name__', None) or 'anonymous')
    if not isinstance(err, BaseException):
        return err
    out = {'message': error_message(err)}
    name = error_name(err)
    if name is not None:
        out['name'] = name
    for key, value in vars(err).items():
        if key.startswith('_') or key in SKIPPED_FIELDS or key in out or key == 'stack':
            continue
        out[key] = value
    if include_stack:
        out['stack'] = getattr(err, 'stack', None) or ''.join(
            traceback.format_exception(type(err), err, err.__traceback__))
    return out


# What a hydrated error must keep as it is: Python's own attributes of an exception, and
# the attributes of gsc's error classes, whatever a peer puts in its error object.
RESERVED_FIELDS = frozenset(('args', 'message', 'with_traceback', 'add_note'))
MAX_REASON_IN_MESSAGE = 256
INTERNAL_ERROR_MESSAGE = 'Internal server error'


def hydrate(obj):
    """An exception built from its wire form; None stays None, non-dicts pass through.

    Every field of the wire form becomes an attribute, except names that would replace an
    attribute of the exception itself (``args``, methods, ``_private`` and ``__dunder__``
    names): a peer's error object can never break the error it hydrates to.
    """
    if obj is None:
        return None
    if not isinstance(obj, dict):
        return obj
    name = obj.get('name')
    cls = ERROR_CLASSES.get(name, SCError) if isinstance(name, str) else SCError
    message = obj.get('message', '')
    err = cls(message if isinstance(message, str) else _render(message))
    for key, value in obj.items():
        if _settable(cls, key):
            setattr(err, key, value)
    return err


def _settable(cls, key):
    """True when a hydrated error may take the wire field ``key`` as an attribute."""
    if not isinstance(key, str) or key.startswith('_') or key in RESERVED_FIELDS:
        return False
    return key == 'name' or not hasattr(cls, key)


def _render(value):
    """A short text for a non-string message or reason (JSON, cut at MAX_REASON_IN_MESSAGE)."""
    from .core.codec import encode  # late: codec imports nothing from here
    try:
        text = value if isinstance(value, str) else encode(value)
    except ValueError:
        text = repr(value)
    if len(text) > MAX_REASON_IN_MESSAGE:
        text = text[:MAX_REASON_IN_MESSAGE] + '...'
    return text


def public_error(err, verbose=False):
    """What a client may see of an exception a handler raised by mistake.

    gsc's own errors (SCError subclasses) and non-exception values are sent as they are.
    Any other exception becomes a generic error named ``Error`` without its attributes (a
    file path, an SQL query...); with ``verbose`` (the ``dev`` environment) it keeps its class
    name and message, still without attributes.
    """
    if not isinstance(err, BaseException) or isinstance(err, SCError):
        return err
    if not verbose:
        return SCError(INTERNAL_ERROR_MESSAGE)
    public = SCError(error_message(err))
    public.name = type(err).__name__
    return public


# TimeoutError is SocketCluster's name; left out of ``import *`` so that it never shadows
# Python's own TimeoutError (import it by name: ``from gsc.errors import TimeoutError``).
__all__ = ['SCError', 'CloseCode', 'dehydrate', 'hydrate', 'close_error', 'public_error'] + sorted(
    name for name in ERROR_CLASSES if name != 'TimeoutError')
