"""A raw WebSocket client for wire-level tests: frames in and out, nothing else.

Built on the sans-I/O client of ``websockets`` over a gevent socket, so tests run in
the same hub as the server under test.
"""

import gevent
from gevent import queue, socket
from websockets.client import ClientProtocol
from websockets.frames import CLOSE, TEXT, BINARY
from websockets.uri import parse_uri


class Closed(Exception):
    """The connection ended; ``code`` and ``reason`` of the close frame (1006 without one)."""

    def __init__(self, code, reason):
        super().__init__('closed with %s %r' % (code, reason))
        self.code = code
        self.reason = reason


class HandshakeRefused(Exception):
    """The server answered the upgrade with an HTTP error; ``status`` and ``body``."""

    def __init__(self, status, body):
        super().__init__('HTTP %s %r' % (status, body))
        self.status = status
        self.body = body


class RawClient:
    """``send(text)``, ``recv(timeout) -> str``, ``close(code)``; Closed when the peer closes."""

    def __init__(self, url, headers=None, timeout=5, extensions=None):
        self.protocol = ClientProtocol(parse_uri(url), extensions=extensions)
        self.sock = socket.create_connection((self.protocol.uri.host, self.protocol.uri.port), timeout=timeout)
        request = self.protocol.connect()
        for name, value in (headers or {}).items():
            request.headers[name] = value
        self.protocol.send_request(request)
        self._flush()
        self.messages = queue.Queue()
        self.close_code = None
        self.close_reason = None
        while self.protocol.handshake_exc is None and not self._opened():
            data = self.sock.recv(65536)
            if not data:
                self.protocol.receive_eof()
            else:
                self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                if hasattr(event, 'status_code'):
                    self.response = event
                else:
                    self._on_frame(event)
        if self.protocol.handshake_exc is not None:
            response = getattr(self, 'response', None) or getattr(self.protocol.handshake_exc, 'response', None)
            raise HandshakeRefused(response.status_code if response else None,
                                   response.body if response else None)
        self.sock.settimeout(None)
        self.reader = gevent.spawn(self._read)

    def _opened(self):
        from websockets.protocol import OPEN
        return self.protocol.state is OPEN

    def _flush(self):
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def _on_frame(self, frame):
        if frame.opcode is TEXT:
            self.messages.put(frame.data.decode())
        elif frame.opcode is BINARY:
            self.messages.put(frame.data)
        elif frame.opcode is CLOSE:
            close = self.protocol.close_rcvd
            self.close_code = close.code if close else 1005
            self.close_reason = close.reason if close else ''

    def _read(self):
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    self.protocol.receive_eof()
                    break
                self.protocol.receive_data(data)
                for frame in self.protocol.events_received():
                    self._on_frame(frame)
                self._flush()
        except OSError:
            pass
        if self.close_code is None:
            self.close_code, self.close_reason = 1006, ''
        self.messages.put(Closed(self.close_code, self.close_reason))

    def send(self, text):
        """Send one text (str) or binary (bytes) frame."""
        if isinstance(text, str):
            self.protocol.send_text(text.encode())
        else:
            self.protocol.send_binary(text)
        self._flush()

    def recv(self, timeout=5):
        """The next message; Closed once the connection has ended; queue.Empty on timeout."""
        item = self.messages.get(timeout=timeout)
        if isinstance(item, Closed):
            self.messages.put(item)
            raise item
        return item

    def close(self, code=1000):
        """Send a close frame and drop the connection."""
        try:
            self.protocol.send_close(code)
            self._flush()
        except Exception:
            pass
        self.sock.close()
        self.reader.kill()
