"""Benchmark servers, each run as its own process: ``python bench/servers.py {gsc,bare} --port P``.

* ``gsc``: one standalone gsc worker with an ``echo`` RPC that answers its data; client
  publish allowed; pings too rare to matter.
* ``bare``: gevent-websocket + ujson with no framework, speaking just enough of the
  SocketCluster protocol for the loadgen: ``#handshake`` is answered, every other event
  with a cid is acked with its own data. The ceiling of FINDINGS.md.

Both listen on 127.0.0.1 only and run until killed.
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('kind', choices=('gsc', 'bare'))
    parser.add_argument('--port', type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format='%(asctime)s %(name)s %(levelname)s %(message)s')
    raise_nofile()
    {'gsc': serve_gsc, 'bare': serve_bare}[args.kind](args.port)


if __name__ == '__main__':
    main()
