"""The frame layer: one WebSocket connection over a gevent socket.

Frames are parsed by the sans-I/O protocol of the ``websockets`` library (masking in C,
size limits checked on the header before the body is read, close codes done right), which
:class:`MessageProtocol` extends to assemble messages in the parser itself.
This module only reads, writes and keeps the close timer:

* reads happen in the greenlet that calls :meth:`WebSocketTransport.run`; every message
  parsed before a protocol violation is delivered (and may be answered) before the close
  frame that the violation causes; the reader gives the event loop a turn after every
  ``YIELD_MESSAGES`` messages and every ``YIELD_BYTES`` bytes it read, so a peer that always
  has data ready cannot starve the other connections of the worker;
* writes from any greenlet are appended to one outbound buffer and flushed by a single
  loop callback per turn of the event loop, so every frame produced while handling one
  read leaves in one ``send``; a client that stops reading is drained by one writer
  greenlet, and closed with 1013 when its backlog passes ``max_outbound``;
* a plain-TCP server connection given :class:`IdleReaders` has no greenlet while it is idle:
  its reader ends after a sweep finds it waiting in ``recv`` with no input since the sweep
  before, and a libev io watcher on the socket starts a new reader when input arrives
  (a waiting greenlet keeps ~5 KB: its saved C stack and itself).
"""

import codecs
import logging
import struct
from collections import namedtuple
from socket import SHUT_WR

import gevent
from gevent import get_hub, getcurrent
from .errors import CloseCode
from .gevent_internals import raw_socket, read_watcher
from websockets.frames import BINARY as OP_BINARY, CONT as OP_CONT, TEXT as OP_TEXT, Frame
from websockets.protocol import CLOSED, OPEN, SEND_EOF, Protocol, Side

log = logging.getLogger(__name__)

# One read is parsed at once, before any turn of the event loop: 16 KiB of 1-byte frames
# is about 13 ms of parsing (64 KiB took 55 ms).
READ_SIZE = 16384
# a turn of the event loop costs ~3 us, a message tens of us
YIELD_MESSAGES = 64
YIELD_BYTES = READ_SIZE
DRAIN_CHUNK = 256 * 1024
CLOSE_TIMEOUT = 2.0
# how long a peer that stopped reading gets to read the rest of its data and the 1013 close,
# when the connection has no pong timeout to go by
OVERFLOW_GRACE = 5.0
DEFAULT_MAX_OUTBOUND = 16 * 1024 * 1024
# seconds between two sweeps of IdleReaders: a reader ends after one to two of them idle
IDLE_SWEEP_INTERVAL = 1.0
_pack_short = struct.Struct('!BB').pack
_pack_medium = struct.Struct('!BBH').pack
_pack_long = struct.Struct('!BBQ').pack
_utf8_decoder = codecs.getincrementaldecoder('utf-8')
# websockets' own loggers, looked up once (its Protocol would look one up per connection)
PROTOCOL_LOGGERS = {side: logging.getLogger('websockets.' + side.name.lower()) for side in Side}


def frame_header(opcode, length):
    """The header of an unmasked, final frame (what a server sends)."""
    if length < 126:
        return _pack_short(0x80 | opcode, length)
    if length < 65536:
        return _pack_medium(0x80 | opcode, 126, length)
    return _pack_long(0x80 | opcode, 127, length)


def encode_text(text):
    """``text`` in UTF-8 the way a JavaScript WebSocket sends a string: a lone surrogate
    (which JSON decoding can produce) becomes U+FFFD instead of raising."""
    try:
        return text.encode('utf-8')
    except UnicodeEncodeError:
        return text.encode('utf-16', 'surrogatepass').decode('utf-16', 'replace').encode('utf-8')


PreparedFrame = namedtuple('PreparedFrame', 'payload frame')


def prepare_frame(payload):
    """``payload`` (text for str, binary for bytes) with its complete server frame, to send to
    many sockets with :meth:`WebSocketTransport.send_frame`: one encoding for all of them
    (a connection that compresses its frames sends the payload itself)."""
    if isinstance(payload, str):
        data = encode_text(payload)
        return PreparedFrame(payload, frame_header(OP_TEXT, len(data)) + data)
    return PreparedFrame(payload, frame_header(OP_BINARY, len(payload)) + bytes(payload))


class MessageProtocol(Protocol):
    """websockets' :class:`Protocol` whose events are complete messages (``str`` for text,
    ``bytes`` for binary), assembled in the parser: so UTF-8 is checked in stream order
    (1007 comes after the messages before it), fragments are collected in one buffer (the
    memory of a message is bounded by ``max_size``, however small its fragments), and
    control frames are left to the protocol."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._fragments = None
        self._fragments_text = None

    def recv_frame(self, frame):
        """Turn data frames into messages; control frames go to the protocol."""
        opcode = frame.opcode
        if frame.fin and self.current_size is None and (opcode is OP_TEXT or opcode is OP_BINARY):
            # the protocol's own checks pass for an unfragmented message: skip them
            self.events.append(frame.data.decode('utf-8') if opcode is OP_TEXT else frame.data)
            return
        super().recv_frame(frame)
        del self.events[-1]
        if opcode is OP_TEXT:
            self._start_message(frame.data, _utf8_decoder())
        elif opcode is OP_BINARY:
            self._start_message(frame.data, None)
        elif opcode is OP_CONT:
            self._continue_message(frame.data, frame.fin)

    def _start_message(self, data, decoder):
        self._fragments = bytearray(data)
        self._fragments_text = decoder
        if decoder is not None:
            decoder.decode(data)

    def _continue_message(self, data, fin):
        # the decoder only validates, so an invalid message fails at its first bad fragment
        self._fragments += data
        decoder = self._fragments_text
        if decoder is not None:
            decoder.decode(data, fin)
        if fin:
            message, self._fragments, self._fragments_text = self._fragments, None, None
            self.events.append(message.decode('utf-8') if decoder is not None else bytes(message))


def yield_to_loop():
    """Wait for one turn of the event loop, so that it polls and serves the other
    connections: a timer, not ``sleep(0)``, whose callback would run before the loop polls
    their sockets."""
    hub = get_hub()
    with hub.loop.timer(0) as timer:
        hub.wait(timer)


class _Park(Exception):
    """Thrown into an idle reader that waits in ``recv``: it ends, the connection stays."""


class IdleReaders:
    """The live readers of one server's plain connections; every ``interval`` seconds, a reader
    that has waited in ``recv`` since the sweep before with no input between them ends, and its
    connection waits for input on a libev io watcher (see :meth:`WebSocketTransport.park_if_idle`).
    The sweeping timer runs only while some reader is live."""

    def __init__(self, interval=None):
        self.interval = IDLE_SWEEP_INTERVAL if interval is None else interval
        self._readers = set()
        self._timer = None

    def __len__(self):
        return len(self._readers)

    def add(self, transport):
        """``transport`` has a live reader."""
        self._readers.add(transport)
        if self._timer is None:
            self._timer = get_hub().loop.timer(self.interval, self.interval)
            self._timer.ref = False
            self._timer.start(self._sweep)

    def discard(self, transport):
        """``transport``'s reader ended."""
        self._readers.discard(transport)

    def _sweep(self):
        if not self._readers:
            self._timer.close()
            self._timer = None
            return
        for transport in list(self._readers):
            transport.park_if_idle()


class WebSocketTransport:
    """A WebSocket over a connected gevent socket, in state OPEN.

    ``on_message(payload)`` gets every complete message (``str`` for text frames,
    ``bytes`` for binary ones); ``on_close(code, reason)`` is called once when the
    connection ends, whoever ended it, and ``on_end()`` once after its socket is closed.
    ``read`` is the function used to read bytes (``sock.recv`` by default); ``initial`` holds
    bytes already read past the upgrade.  With ``idle_readers`` (an :class:`IdleReaders`), a
    plain socket read with ``sock.recv`` has no reader greenlet while idle: :meth:`run` then
    returns before the connection ends, and reading resumes in a new greenlet on input.
    """

    # one per connection: slots keep an idle connection small
    __slots__ = ('sock', 'protocol', 'on_message', 'on_close', 'on_end', 'bytes_received',
                 'max_outbound', '_framed_by_protocol', '_read', '_initial', '_raw', '_idle',
                 '_reader', '_fresh', '_parked', '_loop', '_out', '_out_bytes', '_sending',
                 '_flush_scheduled', '_writer', '_accepting', '_close_queued', '_overflowed',
                 '_closed', '_eof_pending', '_close_timer', '_unyielded_messages',
                 '_unyielded_bytes', 'pong_timeout', '_last_input', '_overflow_deadline',
                 '__weakref__')

    def __init__(self, sock, on_message, on_close, side=Side.SERVER, max_payload=None,
                 read=None, max_outbound=DEFAULT_MAX_OUTBOUND, initial=b'', extensions=None,
                 idle_readers=None, on_end=None, pong_timeout=None):
        self.sock = sock
        self.protocol = MessageProtocol(side, state=OPEN, max_size=max_payload,
                                        logger=PROTOCOL_LOGGERS[side])
        if extensions:
            self.protocol.extensions = list(extensions)
        self.on_message = on_message
        self.on_close = on_close
        self.on_end = on_end
        self.bytes_received = 0
        self.max_outbound = max_outbound
        # seconds without input after which the peer counts as gone (the server's pingTimeout)
        self.pong_timeout = pong_timeout
        # masked (client) and compressed frames are made by the protocol; a server's plain
        # frames by frame_header, which is cheaper
        self._framed_by_protocol = side is Side.CLIENT or bool(extensions)
        self._read = read or sock.recv
        self._initial = initial
        # a plain socket is written from the flush callback without blocking; TLS records
        # must go through the gevent SSL socket, so TLS writes always use the writer greenlet
        self._raw = raw_socket(sock)
        self._idle = idle_readers if self._raw is not None and read is None else None
        self._reader = None  # the reader greenlet while it waits in recv
        self._fresh = True  # input came since the last sweep
        self._parked = None  # the io watcher waiting for input while there is no reader
        self._loop = get_hub().loop
        self._out = []
        self._out_bytes = 0
        self._sending = None
        self._flush_scheduled = False
        self._writer = None
        self._accepting = True
        self._close_queued = False
        self._overflowed = False
        self._closed = False
        self._eof_pending = False
        self._close_timer = None
        self._unyielded_messages = 0
        self._unyielded_bytes = 0
        self._last_input = self._loop.now()
        self._overflow_deadline = None

    @property
    def open(self):
        """True while messages can still be sent."""
        return self._accepting

    @property
    def overflowed(self):
        """True once the connection was closed because its backlog passed ``max_outbound``."""
        return self._overflowed

    @property
    def buffered_amount(self):
        """Bytes written but not yet accepted by the kernel."""
        return self._out_bytes

    # -- sending -----------------------------------------------------------------

    def send(self, payload):
        """Send one message: ``str`` as a text frame, bytes as a binary frame."""
        if not self._accepting:
            return False
        if isinstance(payload, str):
            data = encode_text(payload)
            opcode = OP_TEXT
        else:
            data = bytes(payload)
            opcode = OP_BINARY
        if self._framed_by_protocol:
            # the protocol's own send_text refuses once it has failed; the messages read
            # before the failure are still answered (before its close frame)
            self.protocol.send_frame(Frame(opcode, data))
            for frame in self.protocol.data_to_send():
                self._queue(frame)
        else:
            self._queue(frame_header(opcode, len(data)) + data)
        return True

    def send_frame(self, prepared):
        """Send a :class:`PreparedFrame` (its shared frame, or its payload when compressing)."""
        if self._framed_by_protocol:
            return self.send(prepared.payload)
        if not self._accepting:
            return False
        self._queue(prepared.frame)
        return True

    def close(self, code=CloseCode.NORMAL, reason='', timeout=CLOSE_TIMEOUT):
        """Start the closing handshake with ``code``; the TCP connection ends after it, or
        ``timeout`` seconds later."""
        self._accepting = False
        if self.protocol.state is OPEN and not self._closed:
            self.protocol.send_close(code, reason)
            self._queue_protocol_output(self.protocol.data_to_send())
            self._close_timer = self._loop.timer(timeout)
            self._close_timer.start(self.abort)

    def abort(self):
        """Drop the TCP connection at once."""
        self._accepting = False
        if self._close_timer is not None:
            self._close_timer.close()
            self._close_timer = None
        if not self._closed:
            self._closed = True
            self._drop_backlog()
            # a parked connection has no reader to notice: start one, which finishes at once
            self._unpark()
            try:
                self.sock.close()
            except OSError:
                pass

    def _queue(self, data):
        self._out.append(data)
        self._out_bytes += len(data)
        if self._out_bytes > self.max_outbound and self._accepting:
            self._overflow()
            return
        if not self._flush_scheduled and self._writer is None:
            self._flush_scheduled = True
            self._loop.run_callback(self._flush)

    def _overflow(self):
        """The peer stopped reading: drop the backlog, close with 1013 once the kernel takes
        it, and tell the owner at once (the peer may never read its close frame).

        The connection, holding no data now, stays open while its peer shows signs of life,
        so that the 1013 close frame reaches it when it reads again: up to ``pong_timeout``
        after this decision if input keeps coming, and ``pong_timeout`` after its last input
        if none comes (when a silent peer would have been dropped anyway)."""
        log.warning('closing a connection whose outbound backlog passed %d bytes', self.max_outbound)
        self._out.clear()
        self._out_bytes = len(self._sending) if self._sending is not None else 0
        self._overflowed = True
        grace = OVERFLOW_GRACE
        if self.pong_timeout is not None:
            now = self._loop.now()
            self._overflow_deadline = now + self.pong_timeout
            grace = max(self._last_input + self.pong_timeout - now, 0.001)
        self.close(CloseCode.TRY_AGAIN_LATER, 'Outbound buffer full', grace)
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            gevent.spawn(on_close, CloseCode.TRY_AGAIN_LATER, 'Outbound buffer full')

    def _drop_backlog(self):
        self._out.clear()
        self._sending = None
        self._out_bytes = 0

    def _queue_protocol_output(self, output):
        """Queue what the protocol wrote, up to its close frame (pongs of pings read after
        it are dropped: nothing follows a close frame)."""
        for data in output:
            if data is SEND_EOF:
                self._eof_pending = True
            elif not self._close_queued:
                self._queue(data)
        if self.protocol.close_sent is not None:
            self._close_queued = True
            self._accepting = False

    def _flush(self):
        self._flush_scheduled = False
        if self._closed:
            self._drop_backlog()
            return
        if not self._out or self._writer is not None or self._sending is not None:
            return
        if self._raw is None:
            self._writer = gevent.spawn(self._drain)
            return
        data = self._out[0] if len(self._out) == 1 else b''.join(self._out)
        self._out.clear()
        try:
            sent = self._raw.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.abort()
            return
        if sent < len(data):
            self._sending = memoryview(data)[sent:]
            self._out_bytes = len(self._sending)
            self._writer = gevent.spawn(self._drain)
            return
        self._out_bytes = 0
        self._after_write()

    def _drain(self):
        """Write the backlog in bounded chunks, counting what the kernel took, so that a
        dropped backlog leaves only the rest of the chunk being written before the close
        frame."""
        try:
            while not self._closed:
                if self._sending is None:
                    if not self._out:
                        break
                    self._sending = memoryview(self._next_chunk())
                sent = self.sock.send(self._sending)
                self._out_bytes = max(self._out_bytes - sent, 0)
                self._sending = self._sending[sent:] if sent < len(self._sending) else None
            self._after_write()
        except OSError:
            self.abort()
        finally:
            self._writer = None

    def _next_chunk(self):
        count = size = 0
        for size_of in map(len, self._out):
            count += 1
            size += size_of
            if size >= DRAIN_CHUNK:
                break
        data = self._out[0] if count == 1 else b''.join(self._out[:count])
        del self._out[:count]
        return data

    def _after_write(self):
        """After an overflow, half-close once the close frame is in the kernel: the peer
        reads its data, the 1013 close frame, then the end of the stream."""
        if self._overflowed and self._close_queued and not self._out and not self._closed:
            try:
                self.sock.shutdown(SHUT_WR)
            except OSError:
                pass

    # -- receiving ---------------------------------------------------------------

    def run(self):
        """Read and dispatch until the connection ends, then call ``on_close`` once; with
        idle readers, return early when the connection goes idle (reading resumes later)."""
        idle = self._idle
        if idle is not None:
            idle.add(self)
        parked = False
        try:
            self._read_loop()
        except _Park:  # only thrown into a reader of idle_readers
            parked = True
            self._park()
        finally:
            if idle is not None:
                idle.discard(self)
            if not parked:
                self._finish()

    def park_if_idle(self):
        """End the reader (from the hub) if it waits in ``recv`` and no input came since the
        previous call; a reader handling input (maybe blocked in a handler) is left alone."""
        reader = self._reader
        if reader is None:
            return
        if self._fresh:
            self._fresh = False
            return
        reader.throw(_Park)

    def _park(self):
        watcher = read_watcher(self.sock)
        self._parked = watcher
        watcher.start(self._unpark)

    def _unpark(self):
        """Input arrived (or the connection was aborted) while parked: start a reader."""
        watcher = self._parked
        if watcher is None:
            return
        watcher.stop()
        self._parked = None
        self._fresh = True
        gevent.spawn(self.run)

    def _receive(self):
        """The next bytes read, b'' at the end of the stream."""
        try:
            if self._idle is None:
                return self._read(READ_SIZE)
            self._reader = getcurrent()
            try:
                return self._read(READ_SIZE)
            finally:
                self._reader = None
                self._fresh = True
        except OSError:
            return b''

    def _read_loop(self):
        protocol = self.protocol
        data, self._initial = self._initial, None
        while not self._closed:
            if self._overflowed:
                self._discard_input()
                break
            if not data:
                data = self._receive()
            if not data:
                protocol.receive_eof()
                break
            self._last_input = self._loop.now()
            self.bytes_received += len(data)
            protocol.receive_data(data)
            # the protocol's close frame (after a violation or the peer's close) waits
            # until the messages read before it are delivered and answered
            output = protocol.data_to_send()
            self._deliver(protocol.events_received())
            self._queue_protocol_output(output)
            if protocol.state is CLOSED or self._eof_pending:
                break
            self._unyielded_bytes += len(data)
            data = None
            if self._unyielded_bytes >= YIELD_BYTES:
                self._yield_to_loop()

    def _discard_input(self):
        """Read and drop what a peer that overflowed its backlog still sends, unparsed,
        until its end of stream (or the abort after ``OVERFLOW_GRACE``): unread input
        would turn our close into a reset that destroys the 1013 close frame.  Input is a
        sign of life: the close waits up to ``pong_timeout`` after the overflow."""
        try:
            while not self._closed and self._read(READ_SIZE):
                if self._overflow_deadline is not None:
                    self._extend_close_timer(self._overflow_deadline)
                    self._overflow_deadline = None
        except OSError:
            pass

    def _extend_close_timer(self, deadline):
        """Move the pending close's abort to ``deadline`` (loop time)."""
        if self._close_timer is None or self._closed:
            return
        self._close_timer.close()
        self._close_timer = self._loop.timer(max(deadline - self._loop.now(), 0.001))
        self._close_timer.start(self.abort)

    def _deliver(self, messages):
        on_message = self.on_message
        for message in messages:
            if not self._accepting:
                return
            on_message(message)
            self._unyielded_messages += 1
            if self._unyielded_messages >= YIELD_MESSAGES:
                self._yield_to_loop()

    def _yield_to_loop(self):
        self._unyielded_messages = self._unyielded_bytes = 0
        yield_to_loop()

    def _finish(self):
        protocol = self.protocol
        if protocol.close_rcvd is not None:
            code, reason = protocol.close_rcvd.code, protocol.close_rcvd.reason
        elif protocol.close_sent is not None and protocol.parser_exc is not None and \
                not isinstance(protocol.parser_exc, EOFError):
            # we failed the connection (1002, 1007, 1009): report our own code
            code, reason = protocol.close_sent.code, protocol.close_sent.reason
        else:
            code, reason = CloseCode.ABNORMAL, ''
        self._queue_protocol_output(protocol.data_to_send())
        self._accepting = False
        on_close, self.on_close = self.on_close, None
        try:
            if on_close is not None:
                on_close(code, reason)
        finally:
            self._shut_down()
            on_end, self.on_end = self.on_end, None
            if on_end is not None:
                on_end()
            self._break_cycles()

    def _break_cycles(self):
        """Drop the references that make an ended connection cyclic garbage (the owner's
        bound ``on_message``; the protocol's suspended parser, whose frame holds the protocol;
        the parser's frames in the traceback of its ``parser_exc``): reference counting then
        frees it as it ends, not a full collection later."""
        self.on_message = None
        self.protocol.parser.close()
        exc = self.protocol.parser_exc
        if exc is not None:
            exc.__traceback__ = None

    def _shut_down(self):
        """Send what is queued, half-close, read until the peer's EOF (bounded), then close.

        Closing with unread bytes in the receive buffer would reset the connection and
        could destroy the close frame before the peer reads it.
        """
        with gevent.Timeout(CLOSE_TIMEOUT, False):
            try:
                if self._writer is not None:
                    self._writer.join()
                if (self._out or self._sending is not None) and not self._closed:
                    self._drain()
                if not self._closed:
                    self.sock.shutdown(SHUT_WR)
                    while self._read(READ_SIZE):
                        pass
            except OSError:
                pass
        self.abort()
