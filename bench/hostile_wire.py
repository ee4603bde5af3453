"""A raw WebSocket connection for bench/hostile.py, that sends bytes as they are (client
frames of any shape: tests/kit.py's ``client_frame``, whose zero mask key makes a 20 MiB frame
cost nothing to build).

* :class:`RawConn`: a gevent socket after the upgrade; ``send(bytes)`` writes raw bytes,
  :meth:`RawConn.handshake` does ``#handshake``, a reader greenlet (or :meth:`RawConn.drain`,
  for a client that reads late) counts the answers (``rid``) and keeps the close code.

Only 127.0.0.1; every read has a timeout.
"""

import json
import os
import sys

import gevent
from gevent import socket

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests'))

from kit import HOST, OP_CLOSE, OP_TEXT, FrameReader, UpgradeRefused, client_frame, close_code, emit_frame, upgrade  # noqa: E402

READ_SIZE = 65536


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
        self.answers = {}
        self.messages = 0
        self.bytes_in = 0
        self.close_code = self.close_reason = None
        self.reader = None
        self._next_cid = 1
        try:
            self.frames = FrameReader(upgrade(self.sock, port, key=None))
        except UpgradeRefused as err:
            raise ConnClosed(str(err)) from err

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

    def _read_frame(self):
        """Read one server frame; False once the connection has ended."""
        if self.close_code is not None:
            return False
        try:
            frame = self.frames.next()
            while frame is None:
                chunk = self.sock.recv(READ_SIZE)
                if not chunk:
                    raise EOFError
                self.bytes_in += len(chunk)
                self.frames.feed(chunk)
                frame = self.frames.next()
        except (OSError, EOFError):
            self._ended(1006, '')
            return False
        opcode, payload = frame
        if opcode == OP_CLOSE:
            self._ended(close_code(payload), payload[2:].decode('utf-8', 'replace'))
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
