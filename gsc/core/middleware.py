"""Middleware chains: ``fn(req, next)`` in registration order, stopping at ``next(err)``.

A middleware may also be written as ``fn(req)``: returning continues the chain,
raising stops it with that error.  ``next(True)`` (or an error with a truthy ``silent``)
blocks silently with :class:`SilentMiddlewareBlockedError`; any other error is emitted
as a server ``warning`` when ``middlewareEmitWarnings`` is on.
"""

import inspect

from ..errors import InvalidActionError, InvalidArgumentsError, SilentMiddlewareBlockedError

MIDDLEWARE_HANDSHAKE_WS = 'handshakeWS'
MIDDLEWARE_HANDSHAKE_SC = 'handshakeSC'
MIDDLEWARE_AUTHENTICATE = 'authenticate'
MIDDLEWARE_SUBSCRIBE = 'subscribe'
MIDDLEWARE_PUBLISH_IN = 'publishIn'
MIDDLEWARE_PUBLISH_OUT = 'publishOut'
MIDDLEWARE_EMIT = 'emit'
MIDDLEWARE_PUBLISH = MIDDLEWARE_PUBLISH_IN  # deprecated alias kept by SocketCluster
MIDDLEWARE_TYPES = (MIDDLEWARE_HANDSHAKE_WS, MIDDLEWARE_HANDSHAKE_SC, MIDDLEWARE_AUTHENTICATE,
                    MIDDLEWARE_SUBSCRIBE, MIDDLEWARE_PUBLISH_IN, MIDDLEWARE_PUBLISH_OUT,
                    MIDDLEWARE_EMIT)


class MiddlewareTypes:
    """The middleware type constants, as attributes of the servers that take middleware."""

    MIDDLEWARE_HANDSHAKE_WS = MIDDLEWARE_HANDSHAKE_WS
    MIDDLEWARE_HANDSHAKE_SC = MIDDLEWARE_HANDSHAKE_SC
    MIDDLEWARE_AUTHENTICATE = MIDDLEWARE_AUTHENTICATE
    MIDDLEWARE_SUBSCRIBE = MIDDLEWARE_SUBSCRIBE
    MIDDLEWARE_PUBLISH_IN = MIDDLEWARE_PUBLISH_IN
    MIDDLEWARE_PUBLISH_OUT = MIDDLEWARE_PUBLISH_OUT
    MIDDLEWARE_EMIT = MIDDLEWARE_EMIT
    MIDDLEWARE_PUBLISH = MIDDLEWARE_PUBLISH


class Request:
    """The ``req`` object a middleware receives; its fields depend on the type."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def __repr__(self):
        return 'Request(%s)' % ', '.join(sorted(self.__dict__))


def _takes_next(fn):
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


class MiddlewareChains:
    """The middleware of one server, by type; ``warn(err)`` receives non-silent errors."""

    def __init__(self, warn, emit_warnings=True, types=MIDDLEWARE_TYPES):
        self._chains = {t: [] for t in types}
        self._warn = warn
        self.emit_warnings = emit_warnings

    def add(self, type_, fn):
        """Append ``fn`` to the chain of ``type_``."""
        chain = self._chains.get(type_)
        if chain is None:
            raise InvalidArgumentsError('Middleware type "%s" is not supported' % type_)
        chain.append((fn, _takes_next(fn)))

    def remove(self, type_, fn):
        """Remove every occurrence of ``fn`` from the chain of ``type_``."""
        chain = self._chains.get(type_)
        if chain is not None:
            chain[:] = [entry for entry in chain if entry[0] != fn]

    def has(self, type_):
        """True when ``type_`` has at least one middleware (a fast path skips empty chains)."""
        return bool(self._chains.get(type_))

    def run(self, type_, req, done):
        """Run the chain of ``type_`` on ``req``; ``done(err, extra)`` once at the end."""
        chain = tuple(self._chains[type_])
        self._step(type_, chain, 0, req, done)

    def _step(self, type_, chain, index, req, done):
        if index >= len(chain):
            done(None, None)
            return
        fn, takes_next = chain[index]
        called = []

        def next_(err=None, extra=None):
            if called:
                self._warn(InvalidActionError('Callback for %s middleware was already invoked' % type_))
                return
            called.append(True)
            if err:
                self._finish(type_, err, extra, done)
            else:
                self._step(type_, chain, index + 1, req, done)

        try:
            if takes_next:
                fn(req, next_)
            else:
                fn(req)
        except Exception as exc:  # a raising middleware blocks with its error
            if called:
                raise
            next_(exc)
            return
        if not takes_next:
            next_()

    def _finish(self, type_, err, extra, done):
        if err is True or getattr(err, 'silent', False):
            err = SilentMiddlewareBlockedError(
                'Action was silently blocked by %s middleware' % type_, type=type_)
        elif self.emit_warnings:
            self._warn(err)
        done(err, extra)
