"""The JWT auth engine: SocketCluster's sc-auth (over jsonwebtoken 8) rebuilt on PyJWT.

PyJWT only encodes, decodes and checks signatures here; the claim rules (``iat``, ``exp``,
``nbf``, ``iss``, ...) and the error texts follow jsonwebtoken, because clients display
them.  Verification failures are raised as the sc-errors classes of docs/protocol.md (Authentication):

=============================  ==========================================================
``AuthTokenExpiredError``      ``jwt expired`` (field ``expiry``: ISO date of ``exp``)
``AuthTokenNotBeforeError``    ``jwt not active`` (field ``date``: ISO date of ``nbf``)
``AuthTokenInvalidError``      ``jwt must be provided``, ``jwt malformed``, ``invalid token``,
                               ``invalid signature``, ``invalid algorithm``, ``jwt audience
                               invalid. expected: ...``, ``jwt issuer invalid. expected: ...``
``AuthTokenError``             ``Invalid token format - Token must be a string``, or anything
                               else that went wrong (its ``str``)
=============================  ==========================================================

Signing failures (bad options, claim clashes) raise ``SCError`` (a plain ``Error``) with
jsonwebtoken's message, e.g. ``Bad "options.issuer" option. The payload already has an
"iss" property.``.  PyJWT's warning about short HMAC keys is silenced: SocketCluster
accepts any ``authKey`` (its own tests use ``testkey``).
"""

import copy
import json
import logging
import math
import re
import secrets
import time
import warnings
from datetime import datetime, timedelta

import jwt
from jwt.utils import base64url_decode

from ..core import codec
from ..core.checks import is_int, is_number
from ..errors import (AuthTokenError, AuthTokenExpiredError, AuthTokenInvalidError,
                     AuthTokenNotBeforeError, SCError)

logger = logging.getLogger(__name__)

HS_ALGORITHMS = ('HS256', 'HS384', 'HS512')
RSA_KEY_ALGORITHMS = ('RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512')
PUBLIC_KEY_ALGORITHMS = RSA_KEY_ALGORITHMS + ('ES256', 'ES384', 'ES512')
SIGN_ALGORITHMS = PUBLIC_KEY_ALGORITHMS + HS_ALGORITHMS + ('none',)

_TIMESPAN_MESSAGE = '"%s" should be a number of seconds or string representing a timespan'
_TIMESPAN = re.compile(r'^(-?(?:\d+)?\.?\d+) *(milliseconds?|msecs?|ms|seconds?|secs?|s|minutes?|mins?|m'
                       r'|hours?|hrs?|h|days?|d|weeks?|w|years?|yrs?|y)?$', re.IGNORECASE)
_UNIT_MS = {'y': 31557600000, 'w': 604800000, 'd': 86400000, 'h': 3600000, 'm': 60000, 's': 1000}
_CLAIM_OPTIONS = (('audience', 'aud'), ('issuer', 'iss'), ('subject', 'sub'), ('jwtid', 'jti'))
_IGNORED_OPTIONS = frozenset(('async', 'socket', 'encoding'))  # passed along by the server
_EPOCH = datetime(1970, 1, 1)
_JWS = jwt.PyJWS()


def _is_string(value):
    return isinstance(value, str)


def _is_timespan(value):
    return is_int(value) or (isinstance(value, str) and value != '')


# jsonwebtoken's sign options schema: name -> (check, message); unknown names are refused.
_SIGN_OPTION_CHECKS = {
    'expiresIn': (_is_timespan, _TIMESPAN_MESSAGE % 'expiresIn'),
    'notBefore': (_is_timespan, _TIMESPAN_MESSAGE % 'notBefore'),
    'audience': (lambda v: isinstance(v, (str, list)), '"audience" must be a string or array'),
    'algorithm': (lambda v: v in SIGN_ALGORITHMS, '"algorithm" must be a valid string enum value'),
    'header': (lambda v: isinstance(v, dict), '"header" must be an object'),
    'issuer': (_is_string, '"issuer" must be a string'),
    'subject': (_is_string, '"subject" must be a string'),
    'jwtid': (_is_string, '"jwtid" must be a string'),
    'keyid': (_is_string, '"keyid" must be a string'),
    'noTimestamp': (lambda v: isinstance(v, bool), '"noTimestamp" must be a boolean'),
    'mutatePayload': (lambda v: isinstance(v, bool), '"mutatePayload" must be a boolean'),
}


def generate_auth_key():
    """A fresh ``authKey``: 32 random bytes as 64 hex characters (what the master generates)."""
    return secrets.token_hex(32)


def is_token_expired(token_payload, now=None):
    """True when ``token_payload`` has a numeric ``exp`` and ``now`` (epoch seconds) is past it.

    This is the server's own per-packet expiry check (docs/protocol.md, expired tokens), not JWT verification.
    """
    exp = token_payload.get('exp') if isinstance(token_payload, dict) else None
    if not is_number(exp) or not exp:
        return False
    return (time.time() if now is None else now) > exp


def iso_date(seconds):
    """``new Date(seconds * 1000).toJSON()``: e.g. ``2026-11-25T20:04:44.000Z``; None out of range."""
    try:
        moment = _EPOCH + timedelta(milliseconds=int(seconds * 1000))
    except (OverflowError, ValueError):
        return None
    return moment.isoformat(timespec='milliseconds') + 'Z'


def _timespan(value, timestamp, name):
    """jsonwebtoken's ``timespan``: seconds after ``timestamp`` for a number, ms-style for a string."""
    if not isinstance(value, str):
        return timestamp + value
    match = _TIMESPAN.match(value) if len(value) <= 100 else None
    if match is None:
        raise SCError(_TIMESPAN_MESSAGE % name + ' eg: "1d", "20h", 60')
    unit = (match.group(2) or 'ms').lower()
    factor = 1 if unit.startswith(('ms', 'mil')) else _UNIT_MS[unit[0]]
    return math.floor(timestamp + float(match.group(1)) * factor / 1000)


def _default_algorithms(key):
    """jsonwebtoken's accepted algorithms when ``algorithms`` is not given, chosen by the key."""
    if isinstance(key, bytes):
        key = key.decode('latin-1')
    if not isinstance(key, str):  # a key object of ``cryptography``
        return PUBLIC_KEY_ALGORITHMS
    if 'BEGIN CERTIFICATE' in key or 'BEGIN PUBLIC KEY' in key:
        return PUBLIC_KEY_ALGORITHMS
    if 'BEGIN RSA PUBLIC KEY' in key:
        return RSA_KEY_ALGORITHMS
    return HS_ALGORITHMS


def _check_sign_options(payload, options):
    for name, value in options.items():
        if name in _IGNORED_OPTIONS:
            continue
        check = _SIGN_OPTION_CHECKS.get(name)
        if check is None:
            raise SCError('"%s" is not allowed in "options"' % name)
        if not check[0](value):
            raise SCError(check[1])
    for claim in ('iat', 'exp', 'nbf'):
        if claim in payload and not is_number(payload[claim]):
            raise SCError('"%s" should be a number of seconds' % claim)
    if 'nbf' in payload and 'notBefore' in options:
        raise SCError('Bad "options.notBefore" option the payload already has an "nbf" property.')
    for option, claim in _CLAIM_OPTIONS:
        if option in options and claim in payload:
            raise SCError('Bad "options.%s" option. The payload already has an "%s" property.' % (option, claim))


def _check_claims(payload, options):
    """jsonwebtoken's claim checks after a good signature; tokens without exp/iat are fine."""
    now = options.get('clockTimestamp') or math.floor(time.time())
    tolerance = options.get('clockTolerance') or 0
    if 'nbf' in payload and not options.get('ignoreNotBefore'):
        if not is_number(payload['nbf']):
            raise AuthTokenInvalidError('invalid nbf value')
        if payload['nbf'] > now + tolerance:
            raise AuthTokenNotBeforeError('jwt not active', date=iso_date(payload['nbf']))
    if 'exp' in payload and not options.get('ignoreExpiration'):
        if not is_number(payload['exp']):
            raise AuthTokenInvalidError('invalid exp value')
        if now >= payload['exp'] + tolerance:
            raise AuthTokenExpiredError('jwt expired', expiry=iso_date(payload['exp']))
    audience = options.get('audience')
    if audience:
        expected = audience if isinstance(audience, list) else [audience]
        targets = payload.get('aud') if isinstance(payload.get('aud'), list) else [payload.get('aud')]
        if not any(_audience_matches(want, got) for want in expected for got in targets):
            raise AuthTokenInvalidError('jwt audience invalid. expected: ' + ' or '.join(map(str, expected)))
    issuer = options.get('issuer')
    if issuer and payload.get('iss') not in (issuer if isinstance(issuer, list) else [issuer]):
        shown = ','.join(issuer) if isinstance(issuer, list) else issuer
        raise AuthTokenInvalidError('jwt issuer invalid. expected: ' + shown)
    for option, claim in (('subject', 'sub'), ('jwtid', 'jti')):
        if options.get(option) and payload.get(claim) != options[option]:
            raise AuthTokenInvalidError('jwt %s invalid. expected: %s' % (option, options[option]))


def _audience_matches(want, got):
    if isinstance(want, re.Pattern):
        return isinstance(got, str) and want.search(got) is not None
    return want == got


class AuthEngine:
    """Signs and verifies JWTs with PyJWT, raising SocketCluster's error names.

    A custom engine given to the server must offer ``sign_token`` and ``verify_token`` with
    the same signatures and the same ``mutatePayload`` contract.
    """

    def sign_token(self, payload, key, options=None):
        """The signed token string for the dict ``payload`` (jsonwebtoken's ``sign``).

        ``options`` use SocketCluster's camelCase names: ``algorithm`` (default HS256),
        ``expiresIn``/``notBefore`` (seconds, or a string such as ``'10s'``, ``'2h'``, ``'1d'``),
        ``noTimestamp``, ``issuer``, ``audience``, ``subject``, ``jwtid``, ``header``,
        ``keyid``, ``mutatePayload``; ``async``/``socket`` are ignored, other names refused.
        The payload is deep-copied unless ``mutatePayload`` is true, in which case ``iat``,
        ``exp``, ``nbf`` and the option claims are written into ``payload`` itself (how the
        server learns ``socket.auth_token``).  ``iat`` is the payload's own ``iat`` or
        floor(now); ``exp`` = ``iat + expiresIn``, except that a payload ``exp`` wins and
        ``expiresIn`` is then dropped.  Raises ``SCError`` with jsonwebtoken's message for a
        bad option or a clash such as payload ``iss`` with option ``issuer``.
        """
        return self.sign_token_with_payload(payload, key, options)[0]

    def sign_token_with_payload(self, payload, key, options=None):
        """Like :meth:`sign_token` but returns ``(token, signed_payload)``.

        ``signed_payload`` is the payload exactly as signed (with ``iat``/``exp`` added):
        a deep copy, or ``payload`` itself when ``mutatePayload`` is true.
        """
        options = dict(options or {})
        if not isinstance(payload, dict):
            raise SCError('Expected "payload" to be a plain object.')
        algorithm = options.get('algorithm') or 'HS256'
        if not key and algorithm != 'none':
            raise SCError('secretOrPrivateKey must have a value')
        if 'exp' in payload:
            options.pop('expiresIn', None)
        _check_sign_options(payload, options)

        timestamp = payload.get('iat') or math.floor(time.time())
        claims = {} if options.get('noTimestamp') else {'iat': timestamp}
        if 'notBefore' in options:
            claims['nbf'] = _timespan(options['notBefore'], timestamp, 'notBefore')
        if 'expiresIn' in options:
            claims['exp'] = _timespan(options['expiresIn'], timestamp, 'expiresIn')
        claims.update((claim, options[option]) for option, claim in _CLAIM_OPTIONS if option in options)

        signed = payload if options.get('mutatePayload') else copy.deepcopy(payload)
        if options.get('noTimestamp'):
            signed.pop('iat', None)
        signed.update(claims)

        header = {'kid': options['keyid']} if 'keyid' in options else {}
        header.update(options.get('header') or {})
        body = codec.encode(signed).encode('utf-8')
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', jwt.InsecureKeyLengthWarning)
            token = _JWS.encode(body, key or None, algorithm, header or None)
        return token, signed

    def verify_token(self, signed_token, key, options=None):
        """The decoded payload of ``signed_token`` if its signature and claims are good.

        ``options``: ``algorithms`` (accepted list; by default the HMAC family for a secret
        and RS*/PS*/ES* for a PEM public key), ``audience``, ``issuer``, ``subject``,
        ``jwtid``, ``clockTolerance``, ``clockTimestamp``, ``ignoreExpiration``,
        ``ignoreNotBefore``; others (``async``, ``socket``) are ignored.  None is verified
        as ``''``.  Raises the sc-errors classes listed in the module docstring.
        """
        options = options or {}
        if signed_token is None:
            signed_token = ''
        if not isinstance(signed_token, str):
            raise AuthTokenError('Invalid token format - Token must be a string')
        try:
            return self._verify(signed_token, key, options)
        except SCError:
            raise
        except jwt.InvalidSignatureError:
            raise AuthTokenInvalidError('invalid signature') from None
        except jwt.DecodeError:
            raise AuthTokenInvalidError('invalid token') from None
        except Exception as exc:
            logger.debug('JWT verification failed unexpectedly', exc_info=True)
            raise AuthTokenError(str(exc)) from exc

    @staticmethod
    def _verify(signed_token, key, options):
        if not signed_token:
            raise AuthTokenInvalidError('jwt must be provided')
        parts = signed_token.split('.')
        if len(parts) != 3:
            raise AuthTokenInvalidError('jwt malformed')
        try:
            header = _JWS.get_unverified_header(signed_token)
            payload = json.loads(base64url_decode(parts[1]))
        except (jwt.InvalidTokenError, ValueError):  # PyJWT's header checks quote the client's text
            raise AuthTokenInvalidError('invalid token') from None
        if not isinstance(payload, dict):
            raise AuthTokenInvalidError('invalid token')

        has_signature = parts[2].strip() != ''
        if not has_signature and key:
            raise AuthTokenInvalidError('jwt signature is required')
        if has_signature and not key:
            raise AuthTokenInvalidError('secret or public key must be provided')
        algorithms = options.get('algorithms')
        if algorithms is None:
            algorithms = _default_algorithms(key)
        if header.get('alg') not in algorithms:
            raise AuthTokenInvalidError('invalid algorithm')
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', jwt.InsecureKeyLengthWarning)
            _JWS.decode_complete(signed_token, key, algorithms=[header['alg']])
        _check_claims(payload, options)
        return payload
