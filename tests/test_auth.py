"""Unit tests of gsc.server.auth: signing and verifying JWTs with SocketCluster's errors.

Behaviour ids (B-, X-) are those listed in docs/behaviours-coverage.md.
"""

import base64
import json
import math
import re
import time
import warnings
from datetime import datetime, timezone

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gsc.server.auth import AuthEngine, generate_auth_key, is_token_expired, iso_date
from gsc.errors import (AuthTokenError, AuthTokenExpiredError, AuthTokenInvalidError,
                        AuthTokenNotBeforeError, SCError, dehydrate)

KEY = 'testkey'
# validSignedAuthTokenBob of socketcluster-server's tests (signed by jsonwebtoken).
BOB_TOKEN = ('eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VybmFtZSI6ImJvYiIsImV4cCI6MzE2Mzc1ODk3OTA4MDMxMCwiaWF0'
             'IjoxNTAyNzQ3NzQ2fQ.dSZOfsImq4AvCu-Or3Fcmo7JNv1hrV3WqxaiSKkTtAo')


@pytest.fixture
def engine():
    return AuthEngine()


@pytest.fixture(scope='module')
def rsa_keys():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private_pem, public_pem


def _segment(token, index):
    part = token.split('.')[index]
    return json.loads(base64.urlsafe_b64decode(part + '=' * (-len(part) % 4)))


def _iso(seconds):
    return datetime.fromtimestamp(seconds, timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.000Z')


# --- signing -----------------------------------------------------------------------------

def test_hs256_roundtrip_adds_iat(engine):
    """X-18: a signed payload verifies back with the same data and iat = floor(now)."""
    before = math.floor(time.time())
    token = engine.sign_token({'username': 'alice'}, KEY)
    assert _segment(token, 0) == {'alg': 'HS256', 'typ': 'JWT'}
    payload = engine.verify_token(token, KEY)
    assert payload['username'] == 'alice'
    assert before <= payload['iat'] <= math.floor(time.time())
    assert isinstance(payload['iat'], int)
    assert 'exp' not in payload


def test_sign_with_payload_returns_signed_copy(engine):
    """the payload is deep-copied; the signed copy carries iat/exp and equals the token's."""
    original = {'username': 'bob', 'groups': ['a']}
    token, signed = engine.sign_token_with_payload(original, KEY, {'expiresIn': 86400})
    assert original == {'username': 'bob', 'groups': ['a']}
    assert signed['groups'] is not original['groups']
    assert signed['exp'] == signed['iat'] + 86400
    assert engine.verify_token(token, KEY) == signed


def test_mutate_payload_writes_claims_into_payload(engine):
    """with mutatePayload the server's own copy becomes socket.authToken with iat/exp."""
    payload = {'username': 'bob'}
    token = engine.sign_token(payload, KEY, {'expiresIn': 60, 'mutatePayload': True, 'async': False})
    assert payload['exp'] == payload['iat'] + 60
    assert engine.verify_token(token, KEY) == payload


@pytest.mark.parametrize('expires_in, seconds', [(10, 10), (864000, 864000), ('10s', 10), ('2h', 7200),
                                                 ('1d', 86400), ('1.5m', 90), ('3000ms', 3), ('60', 0)])
def test_expires_in(engine, expires_in, seconds):
    """X-33, B-050: exp = iat + expiresIn (numbers are seconds, strings in ms format)."""
    _, signed = engine.sign_token_with_payload({'u': 1}, KEY, {'expiresIn': expires_in})
    assert signed['exp'] == signed['iat'] + seconds


def test_payload_exp_wins_without_options(engine):
    """B-051: a payload exp of now + 10 days is kept as is."""
    exp = round(time.time()) + 864000
    token = engine.sign_token({'username': 'bob', 'exp': exp}, KEY)
    assert engine.verify_token(token, KEY)['exp'] == exp


def test_payload_exp_wins_over_expires_in(engine):
    """B-052, X-33: payload exp (10 days) beats option expiresIn (1000 days); no error."""
    exp = round(time.time()) + 864000
    token = engine.sign_token({'username': 'bob', 'exp': exp}, KEY, {'expiresIn': 86400000})
    assert engine.verify_token(token, KEY)['exp'] == exp


def test_no_timestamp(engine):
    """X-33: noTimestamp leaves out iat, also one given in the payload."""
    token, signed = engine.sign_token_with_payload({'u': 1, 'iat': 5}, KEY, {'noTimestamp': True})
    assert 'iat' not in signed
    assert 'iat' not in engine.verify_token(token, KEY)


def test_payload_iat_is_the_timestamp(engine):
    """jsonwebtoken: a payload iat is kept and is the base of expiresIn."""
    _, signed = engine.sign_token_with_payload({'iat': 1000}, KEY, {'expiresIn': 10})
    assert (signed['iat'], signed['exp']) == (1000, 1010)


def test_claim_options_and_headers(engine):
    """issuer/audience/subject/jwtid/notBefore/keyid/header pass through to the token."""
    token, signed = engine.sign_token_with_payload({}, KEY, {
        'issuer': 'me', 'audience': ['a', 'b'], 'subject': 's', 'jwtid': 'j', 'notBefore': 0,
        'keyid': 'k1', 'header': {'x': 1}, 'algorithm': 'HS512'})
    assert {k: signed[k] for k in ('iss', 'aud', 'sub', 'jti')} == {'iss': 'me', 'aud': ['a', 'b'],
                                                                     'sub': 's', 'jti': 'j'}
    assert signed['nbf'] == signed['iat']
    assert _segment(token, 0) == {'alg': 'HS512', 'typ': 'JWT', 'kid': 'k1', 'x': 1}
    assert engine.verify_token(token, KEY, {'issuer': 'me', 'audience': 'b', 'subject': 's',
                                            'jwtid': 'j'}) == signed


@pytest.mark.parametrize('claim, option', [('iss', 'issuer'), ('sub', 'subject'), ('aud', 'audience'),
                                           ('jti', 'jwtid')])
def test_claim_clash_fails(engine, claim, option):
    """B-053: payload iss + option issuer (and the like) is a signing error with jsonwebtoken's text."""
    with pytest.raises(SCError) as info:
        engine.sign_token({claim: 'foo'}, KEY, {option: 'bar'})
    assert str(info.value) == 'Bad "options.%s" option. The payload already has an "%s" property.' % (option,
                                                                                                     claim)


def test_nbf_and_not_before_fails(engine):
    """jsonwebtoken 8: payload nbf + option notBefore is an error."""
    with pytest.raises(SCError, match=re.escape(
            'Bad "options.notBefore" option the payload already has an "nbf" property.')):
        engine.sign_token({'nbf': 1}, KEY, {'notBefore': 10})


def test_failed_sign_leaves_payload_alone(engine):
    """a failed signing (bad timespan) does not half-write claims into a mutated payload."""
    payload = {'u': 1}
    with pytest.raises(SCError, match='"expiresIn" should be a number of seconds'):
        engine.sign_token(payload, KEY, {'expiresIn': 'soon', 'mutatePayload': True})
    assert payload == {'u': 1}


@pytest.mark.parametrize('payload, options, message', [
    ({}, {'expires_in': 10}, '"expires_in" is not allowed in "options"'),
    ({}, {'expiresIn': 1.5}, '"expiresIn" should be a number of seconds or string representing a timespan'),
    ({}, {'algorithm': 'HS999'}, '"algorithm" must be a valid string enum value'),
    ({}, {'issuer': 5}, '"issuer" must be a string'),
    ({}, {'noTimestamp': 1}, '"noTimestamp" must be a boolean'),
    ({'exp': 'tomorrow'}, {}, '"exp" should be a number of seconds'),
    ('text', {}, 'Expected "payload" to be a plain object.'),
])
def test_bad_sign_arguments(engine, payload, options, message):
    """jsonwebtoken's option/payload schema errors."""
    with pytest.raises(SCError) as info:
        engine.sign_token(payload, KEY, options)
    assert str(info.value) == message


def test_sign_needs_a_key(engine):
    """jsonwebtoken: signing without a key fails."""
    with pytest.raises(SCError, match='secretOrPrivateKey must have a value'):
        engine.sign_token({}, '')


def test_rs256_roundtrip(engine, rsa_keys):
    """authPrivateKey signs, authPublicKey verifies (RS* accepted by default for a PEM public key)."""
    private_pem, public_pem = rsa_keys
    token = engine.sign_token({'username': 'bob'}, private_pem, {'algorithm': 'RS256', 'expiresIn': 60})
    assert _segment(token, 0)['alg'] == 'RS256'
    assert engine.verify_token(token, public_pem)['username'] == 'bob'
    assert engine.verify_token(token, public_pem.encode(), {'algorithms': ['RS256']})['username'] == 'bob'


# --- verification failures -------------------------------------------------------------

def test_expired(engine):
    """X-03: an expired token fails with AuthTokenExpiredError 'jwt expired' and an ISO expiry."""
    token = engine.sign_token({'exp': 1502747746}, KEY)
    with pytest.raises(AuthTokenExpiredError) as info:
        engine.verify_token(token, KEY)
    assert str(info.value) == 'jwt expired'
    assert info.value.expiry == '2017-08-14T21:55:46.000Z' == _iso(1502747746)
    assert dehydrate(info.value) == {'message': 'jwt expired', 'name': 'AuthTokenExpiredError',
                                     'expiry': '2017-08-14T21:55:46.000Z'}


def test_expired_at_exp_second(engine):
    """jsonwebtoken: expired once floor(now) >= exp (here with expiresIn 0)."""
    token = engine.sign_token({}, KEY, {'expiresIn': 0})
    with pytest.raises(AuthTokenExpiredError):
        engine.verify_token(token, KEY)


def test_not_before(engine):
    """X-04, X-19: nbf in the future fails with AuthTokenNotBeforeError 'jwt not active' and an ISO date."""
    token, signed = engine.sign_token_with_payload({}, KEY, {'notBefore': 3600})
    with pytest.raises(AuthTokenNotBeforeError) as info:
        engine.verify_token(token, KEY)
    assert str(info.value) == 'jwt not active'
    assert info.value.date == _iso(signed['nbf'])


def test_clock_options(engine):
    """jsonwebtoken verify options clockTimestamp/clockTolerance/ignoreExpiration."""
    token = engine.sign_token({'exp': 1000}, KEY)
    assert engine.verify_token(token, KEY, {'clockTimestamp': 999})['exp'] == 1000
    assert engine.verify_token(token, KEY, {'clockTimestamp': 1005, 'clockTolerance': 10})['exp'] == 1000
    assert engine.verify_token(token, KEY, {'ignoreExpiration': True})['exp'] == 1000


@pytest.mark.parametrize('token, message', [
    ('garbage', 'jwt malformed'),
    ('a.b', 'jwt malformed'),
    ('a.b.c', 'invalid token'),
    ('', 'jwt must be provided'),
    (None, 'jwt must be provided'),
])
def test_invalid_tokens(engine, token, message):
    """X-05, X-19: garbage is 'jwt malformed', None/'' is 'jwt must be provided' (AuthTokenInvalidError)."""
    with pytest.raises(AuthTokenInvalidError) as info:
        engine.verify_token(token, KEY)
    assert str(info.value) == message
    assert info.value.name == 'AuthTokenInvalidError'


def test_wrong_key(engine):
    """X-05, B-043: a token signed with another key is 'invalid signature'."""
    token = engine.sign_token({'username': 'bob'}, 'differentAuthKey')
    with pytest.raises(AuthTokenInvalidError, match='^invalid signature$'):
        engine.verify_token(token, KEY)


def test_tampered_payload(engine):
    """X-05: a changed payload under the original signature is 'invalid signature'."""
    header, _, signature = engine.sign_token({'username': 'bob'}, KEY).split('.')
    body = base64.urlsafe_b64encode(b'{"username":"admin"}').rstrip(b'=').decode()
    with pytest.raises(AuthTokenInvalidError, match='^invalid signature$'):
        engine.verify_token('.'.join((header, body, signature)), KEY)


def test_unsigned_token(engine):
    """jsonwebtoken: a token without signature is refused when a key is given."""
    header, body, _ = engine.sign_token({'u': 1}, KEY).split('.')
    with pytest.raises(AuthTokenInvalidError, match='^jwt signature is required$'):
        engine.verify_token(header + '.' + body + '.', KEY)


@pytest.mark.parametrize('token', [123, {'token': 'x'}, b'abc'])
def test_non_string_token(engine, token):
    """X-05: a non-string token is AuthTokenError 'Invalid token format - Token must be a string'."""
    with pytest.raises(AuthTokenError) as info:
        engine.verify_token(token, KEY)
    assert type(info.value) is AuthTokenError
    assert str(info.value) == 'Invalid token format - Token must be a string'


def test_disallowed_algorithm(engine):
    """X-05: an algorithm outside `algorithms` is 'invalid algorithm'."""
    token = engine.sign_token({}, KEY, {'algorithm': 'HS512'})
    with pytest.raises(AuthTokenInvalidError, match='^invalid algorithm$'):
        engine.verify_token(token, KEY, {'algorithms': ['HS256']})
    assert engine.verify_token(token, KEY, {'algorithms': ['HS512']})['iat']


def test_default_algorithms_follow_the_key(engine, rsa_keys):
    """without `algorithms`, a secret accepts HS* only and a PEM public key RS*/PS*/ES* only."""
    private_pem, public_pem = rsa_keys
    rs_token = engine.sign_token({}, private_pem, {'algorithm': 'RS256'})
    with pytest.raises(AuthTokenInvalidError, match='^invalid algorithm$'):
        engine.verify_token(rs_token, KEY)
    with pytest.raises(AuthTokenInvalidError, match='^invalid algorithm$'):
        engine.verify_token(engine.sign_token({}, KEY), public_pem)


def test_other_library_failure_is_auth_token_error(engine):
    """any other failure is AuthTokenError with the library's text (here an unknown alg allowed)."""
    header = base64.urlsafe_b64encode(b'{"alg":"XX1","typ":"JWT"}').rstrip(b'=').decode()
    token = header + '.e30.c2ln'
    with pytest.raises(AuthTokenError) as info:
        engine.verify_token(token, KEY, {'algorithms': ['XX1']})
    assert type(info.value) is AuthTokenError
    assert str(info.value) == 'Algorithm not supported'


@pytest.mark.parametrize('options, message', [
    ({'audience': 'x'}, 'jwt audience invalid. expected: x'),
    ({'audience': ['x', 'y']}, 'jwt audience invalid. expected: x or y'),
    ({'issuer': 'x'}, 'jwt issuer invalid. expected: x'),
    ({'issuer': ['x', 'y']}, 'jwt issuer invalid. expected: x,y'),
    ({'subject': 'x'}, 'jwt subject invalid. expected: x'),
    ({'jwtid': 'x'}, 'jwt jwtid invalid. expected: x'),
])
def test_claim_mismatch(engine, options, message):
    """jsonwebtoken's claim checks: mismatches are AuthTokenInvalidError with its texts."""
    token = engine.sign_token({}, KEY, {'audience': 'a', 'issuer': 'i', 'subject': 's', 'jwtid': 'j'})
    with pytest.raises(AuthTokenInvalidError) as info:
        engine.verify_token(token, KEY, options)
    assert str(info.value) == message


def test_bad_exp_type(engine):
    """jsonwebtoken: a non-numeric exp in a well-signed token is 'invalid exp value'."""
    token = jwt.encode({'exp': 'never'}, KEY + '-' * 32, algorithm='HS256')
    with pytest.raises(AuthTokenInvalidError, match='^invalid exp value$'):
        engine.verify_token(token, KEY + '-' * 32)


# --- tokens that must verify ------------------------------------------------------------------

def test_jsonwebtoken_token_with_huge_exp(engine):
    """B-092: socketcluster-server's validSignedAuthTokenBob (exp 3163758979080310) verifies."""
    assert engine.verify_token(BOB_TOKEN, KEY) == {'username': 'bob', 'exp': 3163758979080310,
                                                   'iat': 1502747746}


def test_huge_exp_signed_here(engine):
    """As in socketcluster-client's tests: exp = now + 5000 years (and beyond) signs and verifies."""
    for exp in (round(time.time()) + 60 * 60 * 24 * 366 * 5000, 3163758979080310, 10 ** 30):
        assert engine.verify_token(engine.sign_token({'exp': exp}, KEY), KEY)['exp'] == exp


def test_without_exp_or_iat(engine):
    """tokens lacking exp and iat are valid."""
    token = engine.sign_token({'username': 'bob'}, KEY, {'noTimestamp': True})
    assert engine.verify_token(token, KEY) == {'username': 'bob'}


def test_future_iat(engine):
    """an iat in the future does not fail verification (jsonwebtoken does not check it)."""
    iat = math.floor(time.time()) + 86400
    token = engine.sign_token({'iat': iat}, KEY)
    assert engine.verify_token(token, KEY)['iat'] == iat


def test_verify_ignores_server_options(engine):
    """B-055: the server passes `async` and `socket` in the verify options; they are ignored."""
    token = engine.sign_token({'u': 1}, KEY)
    assert engine.verify_token(token, KEY, {'async': True, 'socket': object()})['u'] == 1


# --- helpers ------------------------------------------------------------------------------

def test_is_token_expired():
    """X-29: expired means a numeric exp and now > exp."""
    assert is_token_expired({'exp': 100}, now=100.5)
    assert not is_token_expired({'exp': 100}, now=100)
    assert not is_token_expired({'exp': 3163758979080310})
    assert is_token_expired({'exp': time.time() - 1})
    assert not is_token_expired({'username': 'bob'})
    assert not is_token_expired({'exp': '1'}, now=10)
    assert not is_token_expired(None)


def test_iso_date():
    """dates appear as JavaScript's toJSON strings; out of range gives None."""
    assert iso_date(1795637084) == '2026-11-25T20:04:44.000Z'
    assert iso_date(1.5) == '1970-01-01T00:00:01.500Z'
    assert iso_date(3163758979080310) is None


def test_generate_auth_key():
    """a generated authKey is 32 random bytes in hex."""
    first, second = generate_auth_key(), generate_auth_key()
    assert re.fullmatch('[0-9a-f]{64}', first)
    assert first != second


def test_short_hmac_key_does_not_warn(engine):
    """As in socketcluster-server's tests: SocketCluster accepts a short authKey such as 'testkey' without PyJWT warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert engine.verify_token(engine.sign_token({'u': 1}, KEY), KEY)['u'] == 1
