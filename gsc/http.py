"""The worker's HTTP server: WebSocket upgrades at the SocketCluster path go to gsc,
every other request goes to the WSGI application (Flask, Django, ...).

gevent-websocket's handler validates the upgrade and writes the 101 answer; gsc refuses
upgrades first when the path, the origin or the handshakeWS middleware says no, and
takes the socket over after the 101 (the frames are carried by :mod:`gsc.transport`).
"""

import base64
import binascii
import hashlib
import logging

from gevent import GreenletExit, pywsgi
from gevent.pywsgi import LoggingLogAdapter
from geventwebsocket.handler import WebSocketHandler

log = logging.getLogger(__name__)

BAD_REQUEST = ('400 Bad Request', 'Bad Request')
UPGRADE_REQUIRED = ('426 Upgrade Required', 'Upgrade Required')
NOT_FOUND = ('404 Not Found', 'Not Found')
NOT_IMPLEMENTED = ('501 Not Implemented', 'Not Implemented')


def is_upgrade(environ):
    """True for a request that asks for a WebSocket."""
    return environ.get('HTTP_UPGRADE', '').lower() == 'websocket'


class SCHandler(WebSocketHandler):
    """A pywsgi handler that routes each request to gsc or to the WSGI app."""

    def run_application(self):
        """Route the request: an upgrade at the realtime path to gsc, anything else to the app."""
        sc_server = self.server.sc_server
        environ = self.environ
        if sc_server is None or environ.get('PATH_INFO') != sc_server.path:
            if sc_server is not None and is_upgrade(environ):
                return self.refuse(*BAD_REQUEST)
            return self.run_wsgi_app()
        if not is_upgrade(environ):
            return self.refuse(*(BAD_REQUEST if environ.get('HTTP_UPGRADE') else UPGRADE_REQUIRED))
        refusal = sc_server.verify_upgrade(environ)
        if refusal is not None:
            return self.refuse(*refusal)
        self.result = self.upgrade_websocket()
        if self.status is None or not self.status.startswith('101'):
            if self.status:
                self.process_result()
            else:
                self.refuse(*BAD_REQUEST)
            return None
        environ.pop('wsgi.input', None)
        sc_server.handle_upgraded(self)
        self.result = None
        return None

    def upgrade_connection(self):
        """Check the key and version, then write the 101 answer straight to the socket.

        gevent-websocket's own version would also build its WebSocket object, whose
        frames gsc does not use and whose finaliser costs every connection dearly.
        """
        version = self.environ.get('HTTP_SEC_WEBSOCKET_VERSION')
        if version not in self.SUPPORTED_VERSIONS:
            self.start_response('400 Bad Request',
                                [('Sec-WebSocket-Version', ', '.join(self.SUPPORTED_VERSIONS))])
            return [b'Unsupported WebSocket Version']
        key = self.environ.get('HTTP_SEC_WEBSOCKET_KEY', '').strip()
        try:
            valid = len(base64.b64decode(key, validate=True)) == 16
        except (binascii.Error, ValueError):
            valid = False
        if not valid:
            self.start_response('400 Bad Request', [])
            return [b'Invalid Sec-WebSocket-Key']
        accept = base64.b64encode(hashlib.sha1((key + self.GUID).encode('latin-1')).digest())
        answer, self.ws_extensions = self.server.sc_server.negotiate_extensions(self.environ)
        extensions = b'' if answer is None else b'Sec-WebSocket-Extensions: ' + answer.encode() + b'\r\n'
        self.socket.sendall(b'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n'
                            b'Connection: Upgrade\r\nSec-WebSocket-Accept: ' + accept + b'\r\n'
                            + extensions + b'\r\n')
        self.status = '101 Switching Protocols'
        self.headers_sent = True
        self.close_connection = True
        return None

    def run_wsgi_app(self):
        """Serve the request with the WSGI app (501 in a server that has none).

        The environ carries ``gsc.exchange`` (publish from a view) and ``gsc.server``.
        """
        if self.server.application is None:
            return self.refuse(*NOT_IMPLEMENTED)
        sc_server = self.server.sc_server
        if sc_server is not None:
            self.environ['gsc.server'] = sc_server
            self.environ['gsc.exchange'] = sc_server.exchange
        return pywsgi.WSGIHandler.run_application(self)

    def refuse(self, status, body):
        """Answer with ``status`` and a plain-text ``body``, then close the connection."""
        data = body.encode('utf-8')
        self.close_connection = True
        self.start_response(status, [('Content-Type', 'text/plain; charset=utf-8'),
                                     ('Content-Length', str(len(data))),
                                     ('Connection', 'close')])
        self.write(data)
        self.result = None

    def _log_error(self, t, v, tb):
        """A WSGI app that raises (also while streaming its body): a logged traceback and a
        500 for that request only.  pywsgi would hand it to the hub as an uncaught error,
        which a worker treats as fatal."""
        if not issubclass(t, GreenletExit):
            log.error('the WSGI app failed on %s %s', self.environ.get('REQUEST_METHOD'),
                      self.environ.get('PATH_INFO'), exc_info=(t, v, tb))

    def log_request(self):
        """The access log line (when ``log`` is set), not for upgrades."""
        if self.server.log is not None and not str(self.status).startswith('101'):
            pywsgi.WSGIHandler.log_request(self)


class HTTPServer(pywsgi.WSGIServer):
    """A gevent WSGI server that also serves an :class:`gsc.server.SCServer`.

    ``listener`` is ``(host, port)`` or a bound socket; ``app`` the WSGI application
    served beside the realtime path (None: plain requests get 501).  ``sc_server``
    is set by :func:`gsc.server.attach`.  Access logging is off unless ``log`` is given.
    """

    handler_class = SCHandler

    def __init__(self, listener, app=None, log=None, **kwargs):
        kwargs.setdefault('error_log', LoggingLogAdapter(logging.getLogger('gsc.http.error')))
        super().__init__(listener, app, log=log, **kwargs)
        self.application = app
        self.sc_server = None

    def set_wsgi_app(self, app):
        """Serve ``app`` for every request that is not a realtime upgrade."""
        self.application = app
