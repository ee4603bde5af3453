"""The authentication half of a server socket: the token of ``#handshake`` and
``#authenticate``, ``set_auth_token``, deauthentication, and the events they emit.

:class:`SocketAuth` is a mixin of :class:`gsc.server.socket.ServerSocket`, whose state it
uses (``auth_state``, ``auth_token``, ``signed_auth_token``, the server's auth engine).
"""

import copy
import time

from ..errors import (AuthTokenExpiredError, AuthTokenNotBeforeError, CloseCode,
                      InvalidArgumentsError, SCError, dehydrate)
from ..core.middleware import MIDDLEWARE_AUTHENTICATE, Request
from ..core.protocol import AUTHENTICATED, CLOSED, UNAUTHENTICATED, UNDEFINED, Responder


class SocketAuth:
    """Authentication of a :class:`~gsc.server.socket.ServerSocket` (a mixin)."""

    def _expired_token_error(self):
        """Deauthenticate an expired token; the AuthTokenExpiredError, or None if still valid."""
        if time.time() <= self._token_expiry:
            return None
        expiry = self.auth_token.get('exp') if isinstance(self.auth_token, dict) else None
        self.deauthenticate()
        return AuthTokenExpiredError('The socket auth token has expired', expiry=expiry)


    def _process_auth_token(self, signed_token, done):
        """Verify ``signed_token`` and run the authenticate middleware; ``done(err, is_bad)``."""
        server = self.server
        try:
            payload = server.auth.verify_token(
                '' if signed_token is None else signed_token, server.verification_key,
                server.verify_options(self))
        except Exception as exc:
            done(exc, not isinstance(exc, AuthTokenNotBeforeError))
            return
        self._set_token(signed_token, payload)
        if not server.middleware.has(MIDDLEWARE_AUTHENTICATE):
            done(None, False)
            return

        def after_middleware(err, is_bad):
            if err:
                self._set_token(None, None)
                self.auth_state = UNAUTHENTICATED
                done(err, bool(is_bad))
            else:
                done(None, False)
        server.middleware.run(MIDDLEWARE_AUTHENTICATE,
                              Request(socket=self, authToken=payload), after_middleware)

    def _set_token(self, signed_token, payload):
        self.signed_auth_token = signed_token
        self.auth_token = payload
        exp = payload.get('exp') if isinstance(payload, dict) else None
        self._token_expiry = exp if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None
        if payload is not None:
            self.auth_state = AUTHENTICATED

    def _reject_token(self, auth_error, is_bad, signed_token):
        """Report a refused token; a bad one deauthenticates (``#removeAuthToken``)."""
        if not isinstance(auth_error, SCError) or auth_error.name.startswith('AuthToken'):
            self._emit_error(auth_error)
        if is_bad:
            info = {'authError': auth_error, 'signedAuthToken': signed_token}
            self._emit_local('badAuthToken', info)
            self.server.emit('badSocketAuthToken', self, info)
            self.deauthenticate()

    def _on_authenticate(self, packet, _expired):
        signed_token = packet.data if packet.data is not UNDEFINED else None
        respond = Responder(packet.cid, self._send_reply)
        old_state = self.auth_state

        def done(err, is_bad):
            if err is not None:
                if signed_token is None:
                    is_bad = True
                self._reject_token(err, is_bad, signed_token)
                status = {'isAuthenticated': self.auth_state == AUTHENTICATED,
                          'authError': dehydrate(err)}
                if is_bad:
                    respond(err, status)
                else:
                    respond(None, status)
                return
            self._trigger_authentication_events(old_state)
            respond(None, {'isAuthenticated': True, 'authError': None})
        self._process_auth_token(signed_token, done)

    def _on_remove_auth_token(self, _packet, _expired):
        self.deauthenticate_self()


    # -- auth --------------------------------------------------------------------

    def set_auth_token(self, data, options=None, callback=None):
        """Sign ``data`` as the socket's JWT and send it with ``#setAuthToken``."""
        server = self.server
        payload = copy.deepcopy(data)
        options = dict(options or {})
        if 'algorithm' in options:
            del options['algorithm']
            self._emit_error(InvalidArgumentsError(
                'Cannot change auth token algorithm at runtime - It must be specified as a '
                'config option on launch'))
        sign_options = dict(server.default_sign_options)
        sign_options.update(options)
        if isinstance(payload, dict) and 'exp' in payload:
            sign_options.pop('expiresIn', None)
        old_state = self.auth_state
        self.auth_state = AUTHENTICATED
        try:
            token, signed_payload = server.auth.sign_token_with_payload(
                payload, server.signature_key, sign_options)
        except Exception as exc:
            self._emit_error(exc)
            if self.state != CLOSED:
                self._on_sc_close(CloseCode.AUTH_TOKEN_SIGN_FAILED, str(exc))
                self.socket.close(CloseCode.AUTH_TOKEN_SIGN_FAILED)
            if callback is not None:
                callback(exc)
            return
        self._set_token(token, signed_payload)
        self._emit_local('authTokenSigned', token)
        self.emit('#setAuthToken', {'token': token},
                  None if callback is None else (lambda err, _data: callback(err)))
        self._trigger_authentication_events(old_state)

    def _trigger_authentication_events(self, old_state):
        server = self.server
        if old_state != AUTHENTICATED:
            change = {'oldState': old_state, 'newState': AUTHENTICATED, 'authToken': self.auth_token}
            self._emit_local('authStateChange', change)
            server.emit('authenticationStateChange', self, change)
        self._emit_local('authenticate', self.auth_token)
        server.emit('authentication', self, self.auth_token)

    def deauthenticate_self(self):
        """Forget the token locally (events, no packet)."""
        old_token = self.auth_token
        old_state = self.auth_state
        self.signed_auth_token = None
        self.auth_token = None
        self._token_expiry = None
        self.auth_state = UNAUTHENTICATED
        if old_state != UNAUTHENTICATED:
            change = {'oldState': old_state, 'newState': UNAUTHENTICATED}
            self._emit_local('authStateChange', change)
            self.server.emit('authenticationStateChange', self, change)
        self._emit_local('deauthenticate', old_token)
        self.server.emit('deauthentication', self, old_token)

    def deauthenticate(self, callback=None):
        """Forget the token and tell the client with ``#removeAuthToken``."""
        self.deauthenticate_self()
        self.emit('#removeAuthToken', None,
                  None if callback is None else (lambda err, _data: callback(err)))
