"""The frame layer: one WebSocket connection over a gevent socket.

Frames are parsed by the sans-I/O protocol of the ``websockets`` library (masking in C,
size limits checked on the header before the body is read, close codes done right).
This module only reads, writes and keeps the close timer:

* reads happen in the greenlet that calls :meth:`WebSocketTransport.run`;
* writes from any greenlet are appended to one outbound buffer and flushed by a single
  loop callback per turn of the event loop, so every frame produced while handling one
  read leaves in one ``send``; a client that stops reading is drained by one writer
  greenlet, and closed with 1013 when its backlog passes ``max_outbound``.
"""

import logging
import struct
from collections import namedtuple
from socket import SHUT_WR

import gevent
from gevent import get_hub
from websockets.frames import BINARY as OP_BINARY, CONT as OP_CONT, TEXT as OP_TEXT
from websockets.protocol import CLOSED, OPEN, SEND_EOF, Protocol, Side

log = logging.getLogger(__name__)

READ_SIZE = 65536
YIELD_EVERY = 4
DRAIN_CHUNK = 256 * 1024
CLOSE_TIMEOUT = 2.0
DEFAULT_MAX_OUTBOUND = 16 * 1024 * 1024
TRY_AGAIN_LATER = 1013
_pack_short = struct.Struct('!BB').pack
_pack_medium = struct.Struct('!BBH').pack
_pack_long = struct.Struct('!BBQ').pack


def frame_header(opcode, length):
    """The header of an unmasked, final frame (what a server sends)."""
    if length < 126:
        return _pack_short(0x80 | opcode, length)
    if length < 65536:
        return _pack_medium(0x80 | opcode, 126, length)
    return _pack_long(0x80 | opcode, 127, length)


PreparedFrame = namedtuple('PreparedFrame', 'payload frame')


def prepare_frame(payload):
    """``payload`` (text for str, binary for bytes) with its complete server frame, to send to
    many sockets with :meth:`WebSocketTransport.send_frame`: one encoding for all of them
    (a connection that compresses its frames sends the payload itself)."""
    if isinstance(payload, str):
        data = payload.encode('utf-8')
        return PreparedFrame(payload, frame_header(OP_TEXT, len(data)) + data)
    return PreparedFrame(payload, frame_header(OP_BINARY, len(payload)) + bytes(payload))


class WebSocketTransport:
    """A WebSocket over a connected gevent socket, in state OPEN.

    ``on_message(payload)`` gets every complete message (``str`` for text frames,
    ``bytes`` for binary ones); ``on_close(code, reason)`` is called once when the
    connection ends, whoever ended it.  ``read`` is the function used to read bytes
    (``sock.recv`` by default); ``initial`` holds bytes already read past the upgrade.
    """

    def __init__(self, sock, on_message, on_close, side=Side.SERVER, max_payload=None,
                 read=None, max_outbound=DEFAULT_MAX_OUTBOUND, initial=b'', extensions=None):
        self.sock = sock
        self.protocol = Protocol(side, state=OPEN, max_size=max_payload)
        if extensions:
            self.protocol.extensions = list(extensions)
        self.on_message = on_message
        self.on_close = on_close
        self.bytes_received = 0
        self.max_outbound = max_outbound
        # masked (client) and compressed frames are made by the protocol; a server's plain
        # frames by frame_header, which is cheaper
        self._framed_by_protocol = side is Side.CLIENT or bool(extensions)
        self._read = read or sock.recv
        self._initial = initial
        # a plain socket is written from the flush callback without blocking; TLS records
        # must go through the gevent SSL socket, so TLS writes always use the writer greenlet
        self._raw = None if hasattr(sock, '_sslobj') else sock._sock
        self._loop = get_hub().loop
        self._out = []
        self._out_bytes = 0
        self._flush_scheduled = False
        self._writer = None
        self._fragments = None
        self._fragment_opcode = None
        self._closed = False
        self._eof_pending = False
        self._close_timer = None

    @property
    def open(self):
        """True while messages can still be sent."""
        return self.protocol.state is OPEN and not self._closed

    @property
    def buffered_amount(self):
        """Bytes written but not yet accepted by the kernel."""
        return self._out_bytes

    # -- sending -----------------------------------------------------------------

    def send(self, payload):
        """Send one message: ``str`` as a text frame, bytes as a binary frame."""
        if not self.open:
            return False
        if isinstance(payload, str):
            data = payload.encode('utf-8')
            opcode = OP_TEXT
        else:
            data = bytes(payload)
            opcode = OP_BINARY
        if self._framed_by_protocol:
            if opcode is OP_TEXT:
                self.protocol.send_text(data)
            else:
                self.protocol.send_binary(data)
            self._queue_protocol_output()
        else:
            header = frame_header(opcode, len(data))
            if len(data) < 4096:
                self._queue(header + data)
            else:
                self._queue(header, data)
        return True

    def send_frame(self, prepared):
        """Send a :class:`PreparedFrame` (its shared frame, or its payload when compressing)."""
        if self._framed_by_protocol:
            return self.send(prepared.payload)
        if not self.open:
            return False
        self._queue(prepared.frame)
        return True

    def close(self, code=1000, reason=''):
        """Start the closing handshake with ``code``; the TCP connection ends after it."""
        if self.protocol.state is OPEN and not self._closed:
            self.protocol.send_close(code, reason)
            self._queue_protocol_output()
            self._close_timer = self._loop.timer(CLOSE_TIMEOUT)
            self._close_timer.start(self.abort)

    def abort(self):
        """Drop the TCP connection at once."""
        if self._close_timer is not None:
            self._close_timer.close()
            self._close_timer = None
        if not self._closed:
            self._closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def _queue(self, data, more=None):
        self._out.append(data)
        self._out_bytes += len(data)
        if more is not None:
            self._out.append(more)
            self._out_bytes += len(more)
        if self._out_bytes > self.max_outbound and self.protocol.state is OPEN:
            self._overflow()
            return
        if not self._flush_scheduled and self._writer is None:
            self._flush_scheduled = True
            self._loop.run_callback(self._flush)

    def _overflow(self):
        """The peer stopped reading: drop the backlog, close with 1013, and tell the owner at
        once (the closing handshake may never finish with a peer that does not read)."""
        log.warning('closing a connection whose outbound backlog passed %d bytes', self.max_outbound)
        self._out.clear()
        self._out_bytes = 0
        self.close(TRY_AGAIN_LATER, 'Outbound buffer full')
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            gevent.spawn(on_close, TRY_AGAIN_LATER, 'Outbound buffer full')

    def _queue_protocol_output(self):
        for data in self.protocol.data_to_send():
            if data is SEND_EOF:
                self._eof_pending = True
            else:
                self._queue(data)

    def _flush(self):
        self._flush_scheduled = False
        if self._closed:
            self._out.clear()
            self._out_bytes = 0
            return
        if self._out and self._raw is None:
            self._writer = gevent.spawn(self._drain)
            return
        if self._out:
            data = self._out[0] if len(self._out) == 1 else b''.join(self._out)
            self._out.clear()
            try:
                sent = self._raw.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._out_bytes = 0
                self.abort()
                return
            if sent < len(data):
                self._out.append(data[sent:])
                self._out_bytes = len(data) - sent
                self._writer = gevent.spawn(self._drain)
                return
            self._out_bytes = 0

    def _drain(self):
        """Write the backlog in bounded chunks, so that a close frame queued after a
        dropped backlog leaves without waiting behind megabytes."""
        try:
            while self._out and not self._closed:
                count = size = 0
                for size_of in map(len, self._out):
                    count += 1
                    size += size_of
                    if size >= DRAIN_CHUNK:
                        break
                data = b''.join(self._out[:count])
                del self._out[:count]
                self.sock.sendall(data)
                self._out_bytes = max(self._out_bytes - len(data), 0)
        except OSError:
            self.abort()
        finally:
            self._writer = None

    # -- receiving ---------------------------------------------------------------

    def run(self):
        """Read and dispatch until the connection ends, then call ``on_close`` once."""
        protocol = self.protocol
        data, self._initial = self._initial, None
        chunks = 0
        try:
            while not self._closed:
                if not data:
                    try:
                        data = self._read(READ_SIZE)
                    except OSError:
                        data = b''
                if not data:
                    protocol.receive_eof()
                    break
                self.bytes_received += len(data)
                protocol.receive_data(data)
                data = None
                for frame in protocol.events_received():
                    self._on_frame(frame)
                self._queue_protocol_output()
                if protocol.state is CLOSED or self._eof_pending:
                    break
                chunks += 1
                if chunks % YIELD_EVERY == 0:
                    # a peer that always has data ready never blocks in recv: let the
                    # writes (loop callbacks) and the other connections run
                    gevent.sleep(0)
        finally:
            self._finish()

    def _on_frame(self, frame):
        opcode = frame.opcode
        if opcode is OP_TEXT or opcode is OP_BINARY:
            if not frame.fin:
                self._fragments = [frame.data]
                self._fragment_opcode = opcode
                return
            self._deliver(opcode, frame.data)
        elif opcode is OP_CONT:
            self._fragments.append(frame.data)
            if frame.fin:
                data = b''.join(self._fragments)
                self._fragments = None
                self._deliver(self._fragment_opcode, data)

    def _deliver(self, opcode, data):
        # frames read together with the peer's close frame came before it: deliver them
        if self.protocol.state is not OPEN and self.protocol.close_rcvd is None:
            return
        if opcode is OP_TEXT:
            try:
                payload = data.decode('utf-8')
            except UnicodeDecodeError:
                self.protocol.fail(1007, 'Invalid UTF-8 in a text frame')
                return
        else:
            payload = data
        self.on_message(payload)

    def _finish(self):
        protocol = self.protocol
        if protocol.close_rcvd is not None:
            code, reason = protocol.close_rcvd.code, protocol.close_rcvd.reason
        elif protocol.close_sent is not None and protocol.parser_exc is not None and \
                not isinstance(protocol.parser_exc, EOFError):
            # we failed the connection (1002, 1007, 1009): report our own code
            code, reason = protocol.close_sent.code, protocol.close_sent.reason
        else:
            code, reason = 1006, ''
        self._queue_protocol_output()
        on_close, self.on_close = self.on_close, None
        try:
            if on_close is not None:
                on_close(code, reason)
        finally:
            self._shut_down()

    def _shut_down(self):
        """Send what is queued, half-close, read until the peer's EOF (bounded), then close.

        Closing with unread bytes in the receive buffer would reset the connection and
        could destroy the close frame before the peer reads it.
        """
        with gevent.Timeout(CLOSE_TIMEOUT, False):
            try:
                if self._writer is not None:
                    self._writer.join()
                if self._out and not self._closed:
                    data = b''.join(self._out)
                    self._out.clear()
                    self._out_bytes = 0
                    self.sock.sendall(data)
                if not self._closed:
                    self.sock.shutdown(SHUT_WR)
                    while self._read(READ_SIZE):
                        pass
            except OSError:
                pass
        self.abort()
