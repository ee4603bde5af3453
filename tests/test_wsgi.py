"""A legacy WSGI app on the realtime port: Flask beside gsc in one worker."""

import http.client
import json
import logging

import gevent

from flask import Flask, Response, request, stream_with_context

from conftest import handshake, recv_json


def flask_app():
    app = Flask(__name__)

    @app.route('/hello')
    def hello():
        return 'hello from flask'

    @app.route('/stream')
    def stream():
        return Response(stream_with_context('chunk %d\n' % i for i in range(5)), mimetype='text/plain')

    @app.route('/echo', methods=['POST'])
    def echo():
        return {'size': len(request.get_data()), 'json': request.get_json(silent=True)}

    @app.route('/announce', methods=['POST'])
    def announce():
        request.environ['gsc.exchange'].publish('news', request.get_json())
        return {'published': True}

    @app.route('/broken')
    def broken():
        raise RuntimeError('the app broke')
    return app


def http_request(server, method, path, body=None, headers=None):
    """One HTTP request from a real thread, so the in-process gevent server keeps running."""
    return gevent.get_hub().threadpool.apply(_request, (server, method, path, body, headers))


def _request(server, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection('127.0.0.1', server.port, timeout=5)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def test_flask_routes_streaming_posts_and_404(make_server):
    server = make_server(app=flask_app())
    assert http_request(server, 'GET', '/hello') == (200, b'hello from flask')
    assert http_request(server, 'GET', '/stream') == (200, b''.join(b'chunk %d\n' % i for i in range(5)))
    body = json.dumps({'blob': 'x' * 3_000_000})
    status, data = http_request(server, 'POST', '/echo', body, {'Content-Type': 'application/json'})
    assert status == 200 and json.loads(data)['size'] == len(body)
    assert http_request(server, 'GET', '/nowhere')[0] == 404


def test_keep_alive_serves_several_requests_on_one_connection(make_server):
    server = make_server(app=flask_app())

    def three_requests():
        conn = http.client.HTTPConnection('127.0.0.1', server.port, timeout=5)
        answers = []
        for _ in range(3):
            conn.request('GET', '/hello')
            response = conn.getresponse()
            answers.append((response.read(), response.getheader('Connection', '').lower()))
        conn.close()
        return answers
    answers = gevent.get_hub().threadpool.apply(three_requests)
    assert answers == [(b'hello from flask', '')] * 3


def test_a_view_publishes_to_a_channel_a_websocket_receives(make_server, raw):
    server = make_server(app=flask_app())
    client = raw(server)
    handshake(client)
    client.send('{"event":"#subscribe","data":{"channel":"news"},"cid":2}')
    assert recv_json(client) == {'rid': 2}
    status, data = http_request(server, 'POST', '/announce', json.dumps({'headline': 'gsc ships'}),
                                {'Content-Type': 'application/json'})
    assert status == 200 and json.loads(data) == {'published': True}
    assert recv_json(client) == {'event': '#publish', 'data': {'channel': 'news', 'data': {'headline': 'gsc ships'}}}


def test_a_raising_app_gets_500_and_sockets_keep_working(make_server, raw, caplog):
    server = make_server(app=flask_app())
    server.on('connection', lambda socket, status: socket.on('echo', lambda d, respond: respond(None, d)))
    client = raw(server)
    handshake(client)
    with caplog.at_level(logging.ERROR):
        assert http_request(server, 'GET', '/broken')[0] == 500
    assert 'the app broke' in caplog.text
    client.send('{"event":"echo","data":"alive","cid":2}')
    assert recv_json(client) == {'rid': 2, 'data': 'alive'}


def test_the_realtime_path_without_upgrade_is_not_given_to_the_app(make_server):
    server = make_server(app=flask_app())
    status, data = http_request(server, 'GET', '/socketcluster/')
    assert status == 426 and data == b'Upgrade Required'


def test_a_server_without_app_answers_501(make_server):
    """a standalone server answers plain HTTP with 501."""
    server = make_server()
    assert http_request(server, 'GET', '/')[0] == 501


def test_an_app_failing_while_streaming_its_body_costs_only_that_request(make_server, raw, caplog):
    """A plain WSGI app whose body generator raises: the request fails, the server does not."""
    def app(environ, start_response):
        start_response('200 OK', [('Content-Type', 'text/plain')])

        def body():
            yield b'first part\n'
            raise RuntimeError('failed while streaming')
        return body()
    server = make_server(app=app)
    server.on('connection', lambda socket, status: socket.on('echo', lambda d, respond: respond(None, d)))
    client = raw(server)
    handshake(client)
    with caplog.at_level(logging.ERROR):
        try:
            http_request(server, 'GET', '/stream')
        except Exception:
            pass  # the body is cut short; what matters is the server
    assert 'failed while streaming' in caplog.text
    client.send('{"event":"echo","data":"alive","cid":2}')
    assert recv_json(client) == {'rid': 2, 'data': 'alive'}
