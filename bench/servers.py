"""Benchmark servers, each run as its own process: ``python bench/servers.py KIND --port P``.

* ``gsc``: one standalone gsc worker with an ``echo`` RPC that answers its data; client
  publish allowed; pings too rare to matter.
* ``bare``: gevent-websocket + ujson with no framework, speaking just enough of the
  SocketCluster protocol for the loadgen: ``#handshake`` is answered, every other event
  with a cid is acked with its own data. The ceiling of FINDINGS.md.
* ``http-gsc`` and ``http-bare`` (the http scenario): :func:`hello_app`, a trivial WSGI
  route, served by one gsc worker beside its realtime path (default pings, so the idle
  sockets of the scenario cost what they cost) or by gevent's pywsgi alone.

All listen on 127.0.0.1 only and run until killed.
"""

import argparse
import collections
import logging
import os
import resource
import signal
import socket
import sys

import gevent
from gevent import pywsgi

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

HOST = '127.0.0.1'
PING_INTERVAL_MS = 3600 * 1000


def raise_nofile():
    """Raise the soft limit on open files to the hard limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve_gsc(port):
    """One gsc worker with an ``echo`` handler.

    Errors are logged as they happen; warnings (one 'Socket hung up' per connection the
    loadgen terminates) are counted and logged once, on SIGTERM.
    """
    from gsc.server import listen

    warnings = collections.Counter()

    def on_connection(socket_, status):
        socket_.on('echo', lambda data, respond: respond(None, data))

    def on_term():
        for warning, count in warnings.most_common():
            logging.warning('server warning x%d: %s', count, warning)
        sys.exit(0)

    sc = listen(port, {'pingInterval': PING_INTERVAL_MS, 'pingTimeout': 2 * PING_INTERVAL_MS,
                       'allowClientPublish': True}, host=HOST)
    sc.on('connection', on_connection)
    sc.on('error', lambda err: logging.error('server error: %r', err))
    sc.on('warning', lambda warning: warnings.update((repr(warning),)))
    gevent.signal_handler(signal.SIGTERM, on_term)
    gevent.wait()


def serve_bare(port):
    """gevent-websocket + ujson echo that answers ``#handshake`` and acks every event."""
    import ujson
    from geventwebsocket.exceptions import WebSocketError
    from geventwebsocket.handler import WebSocketHandler

    dumps, loads = ujson.dumps, ujson.loads

    def app(environ, start_response):
        ws = environ.get('wsgi.websocket')
        if ws is None:
            start_response('400 Bad Request', [('Content-Type', 'text/plain')])
            return [b'websocket only']
        try:
            while True:
                frame = ws.receive()
                if frame is None:
                    return []
                if frame == '#1':
                    ws.send('#2')
                    continue
                try:
                    msg = loads(frame)
                except ValueError:
                    continue
                cid = msg.get('cid') if isinstance(msg, dict) else None
                if cid is None:
                    continue
                if msg.get('event') == '#handshake':
                    data = {'id': '%x' % id(ws), 'pingTimeout': 20000, 'isAuthenticated': False}
                else:
                    data = msg.get('data')
                ws.send(dumps({'rid': cid, 'data': data}))
        except WebSocketError:
            return []

    class NoDelayServer(pywsgi.WSGIServer):
        """pywsgi never sets TCP_NODELAY; pipelined echo collapses without it."""

        def handle(self, sock, address):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().handle(sock, address)

    NoDelayServer((HOST, port), app, handler_class=WebSocketHandler, log=None).serve_forever()


def hello_app(environ, start_response):
    """The WSGI route of the http scenario, the same for both servers."""
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '13')])
    return [b'Hello, World!']


def http_listener(port):
    """A gsc worker's listening socket (TCP_NODELAY, SO_REUSEPORT), for both http servers."""
    from gsc.cluster.worker import DEFAULT_BACKLOG, bind_listener

    sock = bind_listener({'host': HOST, 'port': port})
    sock.listen(DEFAULT_BACKLOG)
    return sock


def serve_http_gsc(port):
    """A gsc worker's servers (HTTPServer + SCServer) with :func:`hello_app` beside the
    realtime path."""
    from gsc.server.http import HTTPServer
    from gsc.server import attach

    http_server = HTTPServer(http_listener(port), app=hello_app)
    sc = attach(http_server, {})
    sc.on('error', lambda err: logging.error('server error: %r', err))
    http_server.start()
    gevent.signal_handler(signal.SIGTERM, sys.exit, 0)
    gevent.wait()


def serve_http_bare(port):
    """gevent's pywsgi serving :func:`hello_app` alone (no access log, as gsc)."""
    pywsgi.WSGIServer(http_listener(port), hello_app, log=None).serve_forever()


SERVERS = {'gsc': serve_gsc, 'bare': serve_bare, 'http-gsc': serve_http_gsc,
           'http-bare': serve_http_bare}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('kind', choices=sorted(SERVERS))
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--tree', help='the checkout whose gsc is served (default: this one); '
                        'the gsc imported is logged')
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format='%(asctime)s %(name)s %(levelname)s %(message)s')
    if args.tree:
        sys.path.insert(0, os.path.abspath(args.tree))
        import gsc
        logging.warning('serving gsc from %s', gsc.__file__)
    raise_nofile()
    SERVERS[args.kind](args.port)


if __name__ == '__main__':
    main()
