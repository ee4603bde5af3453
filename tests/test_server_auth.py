"""Authentication on the wire: tokens in the handshake, #authenticate, setAuthToken, expiry
(X-03..X-05, X-18, X-19, X-29..X-33, X-38, B-044..B-059)."""

import json
import time

import gevent
import jwt

from conftest import handshake, recv_json, wait_until
from wsraw import Closed
import pytest

KEY = 'testkey'


def token(payload, key=KEY, **claims):
    return jwt.encode(dict(payload, **claims), key, algorithm='HS256')


def auth_server(make_server, options=None):
    server = make_server(dict({'authKey': KEY}, **(options or {})))
    sockets = []

    def on_connection(socket, status):
        sockets.append(socket)
        socket.on('login', lambda data, respond: (socket.set_auth_token(data), respond()))
        socket.on('loginWithOptions', lambda data, respond: (
            socket.set_auth_token(data['payload'], data['options']), respond()))
        socket.on('echo', lambda data, respond: respond(None, data))
    server.on('connection', on_connection)
    server.sockets = sockets
    return server


def test_a_valid_token_in_the_handshake_authenticates(make_server, raw):
    """B-092, B-058: isAuthenticated true, no authError; authentication events fire."""
    server = auth_server(make_server)
    seen = []
    server.on('authentication', lambda socket, tok: seen.append(tok['username']))
    server.on('authenticationStateChange', lambda socket, change: seen.append(
        (change['oldState'], change['newState'])))
    answer = handshake(raw(server), token({'username': 'bob', 'exp': 3163758979080310}))
    assert answer['data']['isAuthenticated'] is True and 'authError' not in answer['data']
    wait_until(lambda: len(seen) == 2)
    assert seen == [('unauthenticated', 'authenticated'), 'bob']
    assert server.sockets[0].auth_token['username'] == 'bob'


def test_an_expired_token_is_removed_before_the_handshake_answer(make_server, raw):
    """X-03."""
    server = auth_server(make_server)
    bad = []
    server.on('badSocketAuthToken', lambda socket, info: bad.append(info))
    client = raw(server)
    client.send(json.dumps({'event': '#handshake', 'cid': 1, 'data': {
        'authToken': token({'username': 'bob'}, exp=int(time.time()) - 10)}}))
    assert recv_json(client) == {'event': '#removeAuthToken', 'data': None}
    answer = recv_json(client)
    assert list(answer['data']) == ['id', 'pingTimeout', 'authError', 'isAuthenticated']
    assert answer['data']['isAuthenticated'] is False
    error = answer['data']['authError']
    assert error['name'] == 'AuthTokenExpiredError' and error['message'] == 'jwt expired'
    assert error['expiry'].endswith('.000Z')
    assert bad[0]['authError'].name == 'AuthTokenExpiredError'


def test_a_token_not_yet_valid_is_reported_but_not_removed(make_server, raw):
    """X-04."""
    server = auth_server(make_server)
    client = raw(server)
    client.send(json.dumps({'event': '#handshake', 'cid': 1, 'data': {
        'authToken': token({'username': 'bob'}, nbf=int(time.time()) + 3600)}}))
    answer = recv_json(client)
    assert answer['rid'] == 1
    error = answer['data']['authError']
    assert error['name'] == 'AuthTokenNotBeforeError' and error['message'] == 'jwt not active' and 'date' in error


@pytest.mark.parametrize('bad_token, name, message', [
    (token({'username': 'bob'}, key='differentAuthKey'), 'AuthTokenInvalidError', 'invalid signature'),
    ('garbage', 'AuthTokenInvalidError', 'jwt malformed'),
    (123, 'AuthTokenError', 'Invalid token format - Token must be a string'),
])
def test_bad_tokens_in_the_handshake(make_server, raw, bad_token, name, message):
    """X-05, B-043."""
    server = auth_server(make_server)
    client = raw(server)
    client.send(json.dumps({'event': '#handshake', 'cid': 1, 'data': {'authToken': bad_token}}))
    assert recv_json(client) == {'event': '#removeAuthToken', 'data': None}
    error = recv_json(client)['data']['authError']
    assert (error['name'], error['message']) == (name, message)


def test_set_auth_token_sends_a_signed_token_with_iat_and_exp(make_server, raw):
    """X-18, B-047: #setAuthToken precedes the login answer; exp = iat + 86400."""
    server = auth_server(make_server)
    signed = []
    client = raw(server)
    handshake(client)
    wait_until(lambda: server.sockets)
    server.sockets[0].on('authTokenSigned', signed.append)
    client.send('{"event":"login","data":{"username":"alice"},"cid":2}')
    packet = recv_json(client)
    assert packet['event'] == '#setAuthToken' and 'cid' not in packet
    payload = jwt.decode(packet['data']['token'], KEY, algorithms=['HS256'])
    assert payload['username'] == 'alice' and payload['exp'] == payload['iat'] + 86400
    assert recv_json(client) == {'rid': 2}
    assert signed == [packet['data']['token']] == [server.sockets[0].signed_auth_token]
    assert server.sockets[0].auth_token == payload


def test_set_auth_token_options(make_server, raw):
    """X-32, X-33, B-050, B-052: algorithm refused at run time; expiresIn; payload exp wins; noTimestamp."""
    server = auth_server(make_server)
    errors = []
    client = raw(server)
    handshake(client)
    wait_until(lambda: server.sockets)
    server.sockets[0].on('error', errors.append)
    cases = [({'algorithm': 'HS512'}, {}), ({'expiresIn': 10}, {}), ({'expiresIn': 86400000}, {'exp': 2000000000}),
             ({'noTimestamp': True}, {})]
    payloads = []
    for cid, (options, extra) in enumerate(cases, start=2):
        client.send(json.dumps({'event': 'loginWithOptions', 'cid': cid, 'data': {
            'payload': dict({'username': 'bob'}, **extra), 'options': options}}))
        packet = recv_json(client)
        header = jwt.get_unverified_header(packet['data']['token'])
        payloads.append((header['alg'], jwt.decode(packet['data']['token'], KEY, algorithms=['HS256'],
                                                   options={'verify_exp': False})))
        assert recv_json(client) == {'rid': cid}
    assert errors[0].name == 'InvalidArgumentsError' and str(errors[0]).startswith(
        'Cannot change auth token algorithm at runtime')
    assert payloads[0][0] == 'HS256'
    assert payloads[1][1]['exp'] == payloads[1][1]['iat'] + 10
    assert payloads[2][1]['exp'] == 2000000000
    assert 'iat' not in payloads[3][1]


def test_a_signing_failure_closes_the_socket_with_4002(make_server, raw):
    """B-053."""
    server = auth_server(make_server)
    warnings = []
    server.on('warning', warnings.append)
    client = raw(server)
    handshake(client)
    client.send(json.dumps({'event': 'loginWithOptions', 'cid': 2, 'data': {
        'payload': {'username': 'bob', 'iss': 'foo'}, 'options': {'issuer': 'bar'}}}))
    with pytest.raises(Closed) as closed:
        while True:
            client.recv()
    assert closed.value.code == 4002
    assert any(getattr(w, 'name', None) == 'SocketProtocolError' for w in warnings)


def test_authenticate_event_valid_null_and_not_before(make_server, raw):
    """X-19."""
    server = auth_server(make_server)
    client = raw(server)
    handshake(client)
    client.send(json.dumps({'event': '#authenticate', 'cid': 4, 'data': token({'username': 'bob'})}))
    assert recv_json(client) == {'rid': 4, 'data': {'isAuthenticated': True, 'authError': None}}
    client.send('{"event":"#authenticate","data":null,"cid":5}')
    assert recv_json(client) == {'event': '#removeAuthToken', 'data': None}
    answer = recv_json(client)
    assert answer['error'] == {'message': 'jwt must be provided', 'name': 'AuthTokenInvalidError'}
    assert answer['data'] == {'isAuthenticated': False, 'authError': answer['error']}
    client.send(json.dumps({'event': '#authenticate', 'cid': 8,
                            'data': token({'username': 'bob'}, nbf=int(time.time()) + 3600)}))
    answer = recv_json(client)
    assert 'error' not in answer and answer['data']['isAuthenticated'] is False
    assert answer['data']['authError']['name'] == 'AuthTokenNotBeforeError'


def test_authenticate_middleware_rejections(make_server, raw):
    """X-38, B-046: next(err) -> authError without removal; next(err, True) -> bad token."""
    server = auth_server(make_server)
    requests = []

    class AuthenticateMiddlewareError(Exception):
        pass

    def middleware(req, next_):
        requests.append(sorted(vars(req)))
        username = req.authToken['username']
        if username == 'alice':
            next_(AuthenticateMiddlewareError('Blocked by MIDDLEWARE_AUTHENTICATE'))
        elif username == 'mallory':
            next_(AuthenticateMiddlewareError('Bad'), True)
        else:
            next_()
    server.add_middleware(server.MIDDLEWARE_AUTHENTICATE, middleware)
    answer = handshake(raw(server), token({'username': 'alice'}))
    assert answer['data']['isAuthenticated'] is False
    assert answer['data']['authError']['name'] == 'AuthenticateMiddlewareError'
    assert requests[0] == ['authToken', 'socket']
    client = raw(server)
    handshake(client)
    client.send(json.dumps({'event': '#authenticate', 'cid': 2, 'data': token({'username': 'alice'})}))
    assert recv_json(client) == {'rid': 2, 'data': {'isAuthenticated': False, 'authError': {
        'message': 'Blocked by MIDDLEWARE_AUTHENTICATE', 'name': 'AuthenticateMiddlewareError'}}}
    client.send(json.dumps({'event': '#authenticate', 'cid': 3, 'data': token({'username': 'mallory'})}))
    assert recv_json(client) == {'event': '#removeAuthToken', 'data': None}
    assert recv_json(client)['error']['message'] == 'Bad'


def test_switching_users_and_deauthenticating_fire_the_right_events(make_server, raw):
    """B-044, B-045: authenticate twice (bob then alice), one state change; deauth events."""
    server = auth_server(make_server)
    events = []
    server.on('authenticationStateChange', lambda s, change: events.append(
        ('change', change['oldState'], change['newState'])))
    server.on('authentication', lambda s, tok: events.append(('authentication', tok['username'])))
    server.on('deauthentication', lambda s, tok: events.append(('deauthentication', tok and tok['username'])))
    client = raw(server)
    handshake(client, token({'username': 'bob'}))
    client.send('{"event":"login","data":{"username":"alice"},"cid":2}')
    recv_json(client)
    assert recv_json(client) == {'rid': 2}
    client.send('{"event":"#removeAuthToken"}')
    client.send('{"event":"echo","data":1,"cid":3}')
    recv_json(client)
    assert events == [('change', 'unauthenticated', 'authenticated'), ('authentication', 'bob'),
                      ('authentication', 'alice'), ('change', 'authenticated', 'unauthenticated'),
                      ('deauthentication', 'alice')]


def test_an_expiring_token_is_removed_on_the_next_packet(make_server, raw):
    """X-29, X-30, X-31: expiry checked on events, #subscribe with waitForAuth and pongs."""
    server = auth_server(make_server)
    expired_errors = []

    def middleware(req, next_):
        expired_errors.append(getattr(req, 'authTokenExpiredError', None))
        next_()
    server.add_middleware(server.MIDDLEWARE_EMIT, middleware)
    clients = []
    for _ in range(3):
        client = raw(server)
        handshake(client, token({'username': 'bob'}, exp=int(time.time()) + 1))
        clients.append(client)
    gevent.sleep(2.1)
    clients[0].send('{"event":"echo","data":1,"cid":2}')
    assert recv_json(clients[0]) == {'event': '#removeAuthToken', 'data': None}
    assert recv_json(clients[0]) == {'rid': 2, 'data': 1}
    assert expired_errors[0].name == 'AuthTokenExpiredError'
    clients[1].send('{"event":"#subscribe","data":{"channel":"priv","waitForAuth":true},"cid":2}')
    assert recv_json(clients[1]) == {'event': '#removeAuthToken', 'data': None}
    error = recv_json(clients[1])['error']
    assert error['name'] == 'AuthTokenExpiredError' and error['message'] == 'The socket auth token has expired'
    assert isinstance(error['expiry'], int)
    clients[2].send('#2')
    assert recv_json(clients[2]) == {'event': '#removeAuthToken', 'data': None}


def test_a_slow_verifier_keeps_the_socket_pending_and_an_early_close_aborts(make_server, raw):
    """B-056, B-059, B-061: a socket that leaves during a slow verification aborts; nothing leaks."""
    from gsc.server.auth import AuthEngine

    class SlowAuth(AuthEngine):
        def verify_token(self, signed_token, key, options=None):
            gevent.sleep(0.5)
            return super().verify_token(signed_token, key, options)
    server = make_server({'authKey': KEY, 'authEngine': SlowAuth()})
    seen = []
    for name in ('connectionAbort', 'disconnection', 'connection', 'closure'):
        server.on(name, lambda *args, _name=name: seen.append(_name))
    client = raw(server)
    client.send('{"event":"#handshake","data":{},"cid":1}')
    gevent.sleep(0.1)
    assert server.clients_count == 0 and server.pending_clients_count == 1
    client.close()
    wait_until(lambda: 'closure' in seen)
    assert seen == ['connectionAbort', 'closure']
    gevent.sleep(0.6)
    assert server.clients == {} and server.pending_clients == {}


def test_rs256_keys(make_server, raw):
    """authPrivateKey signs, authPublicKey verifies; one without the other fails."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    server = auth_server(make_server, {'authPrivateKey': private, 'authPublicKey': public,
                                       'authAlgorithm': 'RS256', 'authKey': None})
    client = raw(server)
    handshake(client)
    client.send('{"event":"login","data":{"username":"rsa"},"cid":2}')
    signed = recv_json(client)['data']['token']
    assert jwt.decode(signed, public, algorithms=['RS256'])['username'] == 'rsa'
    assert handshake(raw(server), signed)['data']['isAuthenticated'] is True
    with pytest.raises(Exception, match='authPublicKey option must be specified'):
        make_server({'authPrivateKey': private})
