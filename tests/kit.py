"""The support kit of tests/ and bench/: raw WebSocket bytes, ports, processes, waiting.

Tests import it as ``kit`` (tests/ is on sys.path, see conftest.py); a bench script run as
``python bench/x.py`` puts tests/ on sys.path first (``sys.path.insert(0, TESTS)``).

* Frames: :func:`client_frame` (any shape, valid or not: a hostile client's too),
  :func:`emit_frame`, :func:`close_frame`; server frames are parsed by the sans-I/O
  ``Frame.parse`` of ``websockets`` in :class:`FrameReader` (and :func:`recv_frame` on a
  blocking socket); :func:`close_code` of a close frame's payload.
* The upgrade: :func:`upgrade_request` (the bytes), :func:`read_response_head`,
  :func:`upgrade` (send the request on a connected socket, check the 101).
* :func:`free_port`: a port below the kernel's ephemeral range.
* Processes: :func:`start_process` (its own session, so its process group is its pid),
  :func:`stop_process` (SIGTERM first if asked, then SIGKILL to the group, by its id),
  :class:`Processes` (several, stopped together), :func:`group_members`.
* :func:`wait_until`: poll a predicate (cooperatively) until true or a timeout.
"""

import base64
import json
import os
import random
import signal
import socket
import struct
import subprocess

import gevent
from websockets.frames import Frame
from websockets.streams import StreamReader
from websockets.utils import apply_mask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = '127.0.0.1'
PATH = '/socketcluster/'
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
ZERO_MASK = b'\0\0\0\0'
SAMPLE_KEY = 'dGhlIHNhbXBsZSBub25jZQ=='  # the nonce of RFC 6455's example
MAX_HEAD = 65536


# -- frames ---------------------------------------------------------------------------------


def client_frame(payload, opcode=OP_TEXT, fin=True, rsv=0, mask=ZERO_MASK):
    """One client frame of ``payload`` (str: UTF-8) with any FIN, RSV bits (``rsv`` 0..7)
    and opcode, valid or not (``websockets``' Frame refuses the invalid ones, which hostile
    clients need). The default mask key is four zero bytes: the payload goes out unchanged,
    so a 20 MiB frame costs nothing to build; ``mask=os.urandom(4)`` masks it really,
    ``mask=None`` sends it unmasked (a protocol error from a client)."""
    if isinstance(payload, str):
        payload = payload.encode()
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0 if mask is None else 0x80
    length = len(payload)
    if length < 126:
        head = struct.pack('!BB', first, mask_bit | length)
    elif length < 65536:
        head = struct.pack('!BBH', first, mask_bit | 126, length)
    else:
        head = struct.pack('!BBQ', first, mask_bit | 127, length)
    if mask is None:
        return head + payload
    if mask != ZERO_MASK:
        payload = apply_mask(payload, mask)
    return head + mask + payload


def emit_frame(event, data=None, cid=None):
    """The text frame of a SocketCluster emit (with ``cid`` when an answer is wanted)."""
    packet = {'event': event, 'data': data}
    if cid is not None:
        packet['cid'] = cid
    return client_frame(json.dumps(packet))


def close_frame(code=1000, reason=''):
    """A client close frame."""
    return client_frame(struct.pack('!H', code) + reason.encode(), OP_CLOSE)


def close_code(payload):
    """The code of a close frame's payload (1005: none given), as sent, valid or not."""
    return struct.unpack('!H', payload[:2])[0] if len(payload) >= 2 else 1005


class FrameReader:
    """Server frames (unmasked) from a byte stream, parsed by ``websockets.frames.Frame``:
    ``feed(bytes)``, then :meth:`next` -> ``(opcode, payload)`` or None while incomplete,
    :meth:`frames` -> every complete one. A frame no server may send raises ProtocolError."""

    def __init__(self, data=b''):
        self._stream = StreamReader()
        self._parser = None
        self.feed(data)

    def feed(self, data):
        if data:
            self._stream.feed_data(data)

    def next(self):
        if self._parser is None:
            self._parser = Frame.parse(self._stream.read_exact, mask=False)
        try:
            next(self._parser)
        except StopIteration as done:
            self._parser = None
            return int(done.value.opcode), bytes(done.value.data)
        return None

    def frames(self):
        out = []
        frame = self.next()
        while frame is not None:
            out.append(frame)
            frame = self.next()
        return out


def recv_frame(sock, reader, size=65536):
    """The next server frame ``(opcode, payload)`` of ``sock`` through ``reader``, reading as
    needed; EOFError when the stream ends first."""
    frame = reader.next()
    while frame is None:
        data = sock.recv(size)
        if not data:
            raise EOFError('the connection ended')
        reader.feed(data)
        frame = reader.next()
    return frame


# -- the upgrade ----------------------------------------------------------------------------


def upgrade_request(port=None, path=PATH, host=HOST, key=SAMPLE_KEY, headers=b''):
    """The bytes of a WebSocket upgrade request; ``Host`` is ``host`` (``host:port`` with a
    port), ``key=None`` picks a random key, ``headers`` (bytes or str, each line ending with
    CRLF) go after the standard ones."""
    if key is None:
        key = base64.b64encode(os.urandom(16)).decode()
    if isinstance(headers, str):
        headers = headers.encode()
    authority = host if port is None else '%s:%d' % (host, port)
    return ('GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
            'Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n'
            % (path, authority, key)).encode() + headers + b'\r\n'


def read_response_head(sock, limit=MAX_HEAD):
    """``(head, rest)``: the bytes of the first HTTP response head (status line and headers,
    without the blank line) and what came after them in the same reads; the head is all that
    came when the connection ended (or passed ``limit``) first."""
    data = b''
    while b'\r\n\r\n' not in data and len(data) <= limit:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b'\r\n\r\n')
    return head, rest


def upgrade_answered(data):
    """The bytes after the upgrade answer's head when ``data`` (what came so far) holds all
    of it, None while it does not; UpgradeRefused unless it is a 101 (for a non-blocking
    client that reads the answer piece by piece)."""
    head, sep, rest = data.partition(b'\r\n\r\n')
    if not sep:
        return None
    if b' 101 ' not in head.split(b'\r\n', 1)[0]:
        raise UpgradeRefused(head)
    return rest


class UpgradeRefused(ConnectionError):
    """The server did not answer the upgrade with 101; ``head`` is what it answered."""

    def __init__(self, head):
        super().__init__('upgrade refused: %r' % head[:200])
        self.head = head


def upgrade(sock, port=None, path=PATH, key=None, headers=b'', first=b''):
    """Send the upgrade request (and ``first``, bytes sent with it) on the connected
    ``sock``, read the answer; the bytes that came after the head (UpgradeRefused unless it
    is a 101)."""
    sock.sendall(upgrade_request(port, path, key=key, headers=headers) + first)
    head, rest = read_response_head(sock)
    if not head.startswith(b'HTTP/1.1 101'):
        raise UpgradeRefused(head)
    return rest


# -- ports ----------------------------------------------------------------------------------


def free_port():
    """A TCP port nobody uses right now, below the kernel's ephemeral range: the client sockets
    of other tests and benches (thousands at once) take their ports from that range, so a port
    picked there could be taken by one of them before the server binds it."""
    low = ephemeral_port_range()[0]
    for _ in range(100):
        port = random.randrange(10000, low) if low > 11000 else 0
        with socket.socket() as sock:
            try:
                sock.bind(('0.0.0.0', port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError('no free port below %d' % low)


def ephemeral_port_range():
    """``(low, high)`` of the ports the kernel gives client sockets."""
    try:
        with open('/proc/sys/net/ipv4/ip_local_port_range') as f:
            low, high = f.read().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


# -- processes ------------------------------------------------------------------------------


def start_process(argv, cwd=ROOT, popen=subprocess.Popen, **kwargs):
    """``popen(argv, **kwargs)`` in its own session (its process group id is its pid, so
    :func:`stop_process` reaches everything it starts). A test whose server runs in its own
    process passes ``popen=gevent.subprocess.Popen``, so that waiting for the child lets the
    server serve it."""
    return popen(argv, cwd=cwd, start_new_session=True, **kwargs)


def stop_process(proc, term_timeout=0.0, timeout=5.0, close=True):
    """Stop ``proc`` and its process group, by its pid: SIGTERM to ``proc`` first when
    ``term_timeout`` (waited up to that long), then SIGKILL to the group; its pipes closed
    unless ``close`` is false (a thread still reading them closes them once done).
    Its exit code (None if it did not end within ``timeout``)."""
    if term_timeout and proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(term_timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    for stream in (proc.stdin, proc.stdout, proc.stderr) if close else ():
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
    return proc.returncode


class Processes:
    """Processes started with :func:`start_process`, stopped together (last started first)
    by :meth:`stop`."""

    def __init__(self, term_timeout=0.0):
        self.procs = []
        self.term_timeout = term_timeout

    def start(self, argv, **kwargs):
        proc = start_process(argv, **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self):
        for proc in reversed(self.procs):
            stop_process(proc, self.term_timeout)


def proc_stats():
    """``(pid, fields)`` of every process, ``fields`` being /proc/PID/stat after the command
    name: state, ppid, pgrp, ..."""
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % name) as f:
                yield int(name), f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue


def group_members(pgid):
    """Live (non-zombie) pids of process group ``pgid``."""
    return [pid for pid, fields in proc_stats() if int(fields[2]) == pgid and fields[0] != 'Z']


# -- waiting --------------------------------------------------------------------------------


def wait_until(predicate, timeout=5, interval=0.01, message=None, error=AssertionError):
    """Call ``predicate()`` until it returns a true value (returned), sleeping ``interval``
    between calls with gevent.sleep (cooperative under gevent, a plain sleep elsewhere);
    ``error`` (AssertionError; ``message``, or the predicate and timeout) after ``timeout``
    seconds."""
    failure = error(message or 'condition %s not met in %ss'
                             % (getattr(predicate, '__name__', predicate), timeout))
    with gevent.Timeout(timeout, failure):
        while True:
            result = predicate()
            if result:
                return result
            gevent.sleep(interval)
