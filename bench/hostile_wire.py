"""Raw WebSocket bytes for bench/hostile.py: client frames of any shape, and a connection
that sends them as they are.

* :func:`client_frame`: one masked client frame with any FIN, RSV bits and opcode (valid or
  not). The mask key is four zero bytes, so the payload goes out unchanged and a 20 MiB frame
  costs nothing to build; the server unmasks it as any other.
* :class:`RawConn`: a gevent socket after the upgrade; ``send(bytes)`` writes raw bytes,
  :meth:`RawConn.handshake` does ``#handshake``, a reader greenlet (or :meth:`RawConn.drain`,
  for a client that reads late) counts the answers (``rid``) and keeps the close code.

Only 127.0.0.1; every read has a timeout.
"""

import base64
import json
import os
import struct

import gevent
from gevent import socket

HOST = '127.0.0.1'
PATH = '/socketcluster/'
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
ZERO_MASK = b'\x00\x00\x00\x00'
READ_SIZE = 65536
MAX_UPGRADE_RESPONSE = 65536


def client_frame(payload, opcode=OP_TEXT, fin=True, rsv=0):
    """A masked client frame (zero mask key) of ``payload`` bytes; ``rsv`` is 0..7."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack('!BB', first, 0x80 | n)
    elif n < 65536:
        head = struct.pack('!BBH', first, 0x80 | 126, n)
    else:
        head = struct.pack('!BBQ', first, 0x80 | 127, n)
    return head + ZERO_MASK + payload


def emit_frame(event, data, cid=None):
    """The text frame of a SocketCluster emit (with ``cid`` when an answer is wanted)."""
    packet = {'event': event, 'data': data}
    if cid is not None:
        packet['cid'] = cid
    return client_frame(json.dumps(packet).encode())


def upgrade_request(port, extra_headers=''):
    """The bytes of a WebSocket upgrade request for the SocketCluster path."""
    key = base64.b64encode(os.urandom(16)).decode()
    return ('GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
            'Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n'
            % (PATH, HOST, port, key, extra_headers)).encode()


class ConnClosed(Exception):
    """The server ended the connection (or refused the upgrade)."""


class RawConn:
    """One upgraded connection; ``answered`` counts answers by cid, ``close_code`` is None
    while open (1006 when the TCP connection ended without a close frame)."""

    def __init__(self, port, timeout=5.0, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((HOST, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b''
        self.answers = {}
        self.messages = 0
        self.bytes_in = 0
        self.close_code = self.close_reason = None
        self.reader = None
        self._next_cid = 1
        self.sock.sendall(upgrade_request(port))
        self._read_upgrade_response()

    def _read_upgrade_response(self):
        while b'\r\n\r\n' not in self.buf:
            chunk = self.sock.recv(READ_SIZE)
            if not chunk or len(self.buf) > MAX_UPGRADE_RESPONSE:
                raise ConnClosed('no upgrade response')
            self.buf += chunk
        head, self.buf = self.buf.split(b'\r\n\r\n', 1)
        if not head.startswith(b'HTTP/1.1 101'):
            raise ConnClosed('upgrade refused: %r' % head[:60])

    def cid(self):
        """A fresh call id."""
        self._next_cid += 1
        return self._next_cid

    def send(self, data):
        """Write raw bytes; ConnClosed once the server has closed or reset the connection."""
        if self.close_code is not None:
            raise ConnClosed('closed with %s' % self.close_code)
        try:
            self.sock.sendall(data)
        except OSError as err:
            self._ended(1006, '')
            raise ConnClosed(str(err)) from err

    def handshake(self, timeout=5.0):
        """``#handshake`` and its answer, read in this greenlet (before any reader runs)."""
        cid = self.cid()
        self.send(emit_frame('#handshake', {}, cid))
        with gevent.Timeout(timeout, ConnClosed('no #handshake answer within %s s' % timeout)):
            while cid not in self.answers:
                if not self._read_frame():
                    raise ConnClosed('closed with %s during #handshake' % self.close_code)
        return self

    def start_reader(self):
        """Read and count the server's frames in a greenlet until the connection ends."""
        self.sock.settimeout(None)
        self.reader = gevent.spawn(self._read_all)
        return self

    def _read_all(self):
        while self._read_frame():
            pass

    def drain(self, timeout):
        """Read everything (in this greenlet) until the connection ends or ``timeout`` passes."""
        with gevent.Timeout(timeout, False):
            self._read_all()
        return self.bytes_in

    def wait_answer(self, cid, timeout):
        """True once ``cid`` has been answered (the reader must run), False on close or timeout."""
        with gevent.Timeout(timeout, False):
            while cid not in self.answers and self.close_code is None:
                gevent.sleep(0.005)
        return cid in self.answers

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(READ_SIZE)
            if not chunk:
                raise EOFError
            self.bytes_in += len(chunk)
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _read_frame(self):
        """Read one server frame; False once the connection has ended."""
        if self.close_code is not None:
            return False
        try:
            first, second = self._need(2)
            n = second & 0x7f
            if n == 126:
                n = struct.unpack('!H', self._need(2))[0]
            elif n == 127:
                n = struct.unpack('!Q', self._need(8))[0]
            payload = self._need(n)
        except (OSError, EOFError):
            self._ended(1006, '')
            return False
        opcode = first & 0x0f
        if opcode == OP_CLOSE:
            code = struct.unpack('!H', payload[:2])[0] if len(payload) >= 2 else 1005
            self._ended(code, payload[2:].decode('utf-8', 'replace'))
            return False
        if opcode == OP_TEXT:
            self._on_text(payload)
        return True

    def _on_text(self, payload):
        self.messages += 1
        if payload == b'#1':
            try:
                self.send(client_frame(b'#2'))
            except ConnClosed:
                pass
            return
        try:
            message = json.loads(payload)
        except ValueError:
            return
        for packet in message if isinstance(message, list) else [message]:
            if isinstance(packet, dict) and isinstance(packet.get('rid'), int):
                self.answers[packet['rid']] = packet

    def _ended(self, code, reason):
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            try:
                self.sock.close()
            except OSError:
                pass

    def close(self):
        """Drop the connection and stop the reader."""
        self._ended(1006, 'closed by the bench')
        if self.reader is not None:
            self.reader.kill(block=False)
