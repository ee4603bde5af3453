"""IPC between the processes of a cluster: one :class:`Channel` per link.

A link is a connected stream socket: a ``socket.socketpair()`` made before a fork (a
parent and its child), or a worker's connection to a broker's unix socket.  Messages are
JSON objects (ujson, through :mod:`gsc.core.codec`), each framed by a 4-byte big-endian
length.  The forms mirror the client protocol:

- event:  ``{"type": NAME, "data": ..., "cid": N, ...}`` (``cid`` only when an answer is expected)
- answer: ``{"rid": N, "data": ...}`` or ``{"rid": N, "error": {"name", "message", "stack", ...}}``

One pump greenlet per link reads whole frames and dispatches them; writes never block
the caller (what the kernel does not take waits in a bounded buffer flushed by an I/O
watcher).  A message larger than a frame may be is refused before anything is written
(``ResourceLimitError`` from :meth:`Channel.send` and :meth:`Channel.write`; an answer
that big becomes an error answer), so the link and the calls in flight on it survive.
A call with a callback gets its answer, ``TimeoutError('IPC response timed out')`` after
``ack_timeout`` ms, or ``BadConnectionError`` at once when the link breaks.

A link over a unix socket (a worker's link to a broker) is authenticated before any
message: :func:`authenticate_peer` (the listening end) and :func:`prove_to_peer` (the
connecting end) run a challenge-response over the cluster's ``secretKey``, so neither end
sends the key and neither can be impersonated by a process that does not know it:

1. listener -> connector: ``GSC-IPC1`` + a 32-byte random nonce ``Ns``
2. connector -> listener: a 32-byte random nonce ``Nc`` + HMAC-SHA256(key, ``client`` Ns Nc)
3. listener -> connector: byte 1 + HMAC-SHA256(key, ``server`` Ns Nc), or byte 0 (refused)
   and the link closed

Each end checks the other's HMAC in constant time and closes the link on a wrong one or
when the exchange takes longer than :func:`auth_timeout`.  The links between a process and
its children are socketpairs made before the fork: no other process can reach them.
"""

import errno
import hashlib
import hmac
import logging
import os
import socket
import struct
import traceback
from functools import partial

import gevent
from gevent import get_hub

from ..core import codec
from ..core.codec import MAX_FRAME
from ..errors import BadConnectionError, ResourceLimitError, TimeoutError, dehydrate, hydrate
from ..core.protocol import UNDEFINED, CallTable

log = logging.getLogger(__name__)

HEADER = struct.Struct('>I')
MAX_OUTBOUND = 256 * 1024 * 1024
"""Bytes a peer may leave unread before its link is closed as stuck."""
READ_SIZE = 256 * 1024
AUTH_MAGIC = b'GSC-IPC1'
NONCE_SIZE = 32
MAC_SIZE = 32
AUTH_TIMEOUT = 2.0
"""Seconds a peer has to authenticate (or ``ipcAckTimeout``, when smaller)."""
ACCEPTED = b'\x01'
REFUSED = b'\x00'

_open_fds: set = set()


def close_inherited(keep=()):
    """Close every link fd inherited from the parent except ``keep`` (call in a fresh child)."""
    for fd in list(_open_fds):
        if fd not in keep:
            _open_fds.discard(fd)
            try:
                os.close(fd)
            except OSError:
                pass


def wire_error(err, capture_stack=True):
    """``err`` dehydrated with its stack; an error that was never raised gets the stack of
    the code that reports it (as a JavaScript error would) unless ``capture_stack`` is
    false (a warning a client caused: that stack says nothing and costs much)."""
    if capture_stack and isinstance(err, BaseException) and err.__traceback__ is None \
            and not getattr(err, 'stack', None):
        err.stack = 'Traceback (most recent call last):\n%s%s' % (
            ''.join(traceback.format_stack()[:-2]),
            ''.join(traceback.format_exception_only(type(err), err)))
    return dehydrate(err, include_stack=True)


class LinkAuthError(Exception):
    """The other end of a link did not prove that it knows the secret key (in time)."""


class LinkRefusedError(LinkAuthError):
    """The listening end refused this end's proof: the two ends have different keys."""


def auth_timeout(ack_timeout):
    """Seconds a peer has to authenticate: :data:`AUTH_TIMEOUT`, or ``ack_timeout`` (ms)
    when smaller."""
    return min(AUTH_TIMEOUT, ack_timeout / 1000.0)


def authenticate_peer(sock, secret_key, timeout=AUTH_TIMEOUT):
    """The listening end of the handshake on a connected gevent socket: True when the peer
    proved it knows ``secret_key`` (and got this end's proof); ``LinkAuthError`` when it did
    not within ``timeout`` seconds (a peer with a wrong proof is told it was refused)."""
    server_nonce = os.urandom(NONCE_SIZE)
    expired = LinkAuthError('no proof of the secret key within %g s' % timeout)
    with gevent.Timeout(timeout, expired):
        sock.sendall(AUTH_MAGIC + server_nonce)
        answer = _recv_exactly(sock, NONCE_SIZE + MAC_SIZE)
        client_nonce, proof = answer[:NONCE_SIZE], answer[NONCE_SIZE:]
        if not hmac.compare_digest(proof, _proof(secret_key, b'client', server_nonce, client_nonce)):
            sock.sendall(REFUSED)
            raise LinkAuthError('a wrong proof of the secret key')
        sock.sendall(ACCEPTED + _proof(secret_key, b'server', server_nonce, client_nonce))
    return True


def prove_to_peer(sock, secret_key, timeout=AUTH_TIMEOUT):
    """The connecting end of the handshake on a connected gevent socket: True when both ends
    proved they know ``secret_key``; ``LinkRefusedError`` when the listener refused this end's
    proof, ``LinkAuthError`` when the listener did not prove its own within ``timeout``
    seconds.  Nothing is sent before the listener's challenge arrives."""
    client_nonce = os.urandom(NONCE_SIZE)
    expired = LinkAuthError('it did not authenticate within %g s' % timeout)
    with gevent.Timeout(timeout, expired):
        hello = _recv_exactly(sock, len(AUTH_MAGIC) + NONCE_SIZE)
        if not hello.startswith(AUTH_MAGIC):
            raise LinkAuthError('it does not speak the gsc IPC protocol')
        server_nonce = hello[len(AUTH_MAGIC):]
        sock.sendall(client_nonce + _proof(secret_key, b'client', server_nonce, client_nonce))
        if _recv_exactly(sock, 1) != ACCEPTED:
            raise LinkRefusedError('Invalid password was supplied to the broker')
        proof = _recv_exactly(sock, MAC_SIZE)
        if not hmac.compare_digest(proof, _proof(secret_key, b'server', server_nonce, client_nonce)):
            raise LinkAuthError('it could not prove that it knows the secret key')
    return True


def peer_name(sock):
    """``pid N, uid N`` of the process at the other end of a unix socket (SO_PEERCRED)."""
    try:
        pid, uid, _gid = struct.unpack('3i', sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize('3i')))
    except (OSError, AttributeError):
        return 'an unknown process'
    return 'pid %d, uid %d' % (pid, uid)


def _proof(secret_key, role, server_nonce, client_nonce):
    key = (secret_key or '').encode('utf-8')
    return hmac.new(key, role + server_nonce + client_nonce, hashlib.sha256).digest()


def _recv_exactly(sock, size):
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise LinkAuthError('the link was closed during authentication')
        data += chunk
    return bytes(data)


def _noop_respond(err=None, data=UNDEFINED):
    """The ``respond`` of a message that asked for no answer."""


class Channel:
    """One end of an IPC link.

    ``fd`` is a connected stream socket fd (owned by the channel from now on);
    ``on_message(message, respond)`` receives every event message (a dict with
    ``type``), ``respond(err=None, data=None)`` answers it (a no-op without a cid);
    ``on_close(channel, reason)`` is called once when the link ends.

    Attributes: ``name`` (for messages), ``closed``, ``close_reason``, ``max_frame`` (the
    largest frame in either direction; the class attribute is the default of new links).
    """

    max_frame = MAX_FRAME

    def __init__(self, fd, on_message, on_close=None, ack_timeout=10000, name='link',
                 max_frame=None):
        self.fd = fd
        self.name = name
        self.on_message = on_message
        self.on_close = on_close
        self.ack_timeout = ack_timeout
        if max_frame is not None:
            self.max_frame = max_frame
        self.closed = False
        self.close_reason = None
        self._calls = CallTable()
        self._out = bytearray()
        self._corked = False
        self._pump = None
        self._write_watcher = None
        os.set_blocking(fd, False)
        _open_fds.add(fd)

    def start(self):
        """Start the pump greenlet that reads and dispatches messages."""
        self._pump = gevent.spawn(self._run)
        return self

    def send(self, type_, data=None, callback=None, timeout=UNDEFINED, **fields):
        """Send an event; ``callback(err, data)`` gets the answer when given.

        ``timeout`` (ms) defaults to the channel's ``ack_timeout``; None waits forever.
        Raises ``ResourceLimitError`` (nothing sent, no callback) when the message is larger
        than ``max_frame``.
        """
        message = {'type': type_, 'data': data}
        message.update(fields)
        if callback is None:
            self.write(message)
            return
        if self.closed:
            callback(self._broken_error(), None)
            return
        cid = self._calls.next_cid()
        message['cid'] = cid
        frame = self.frame(message)
        entry = self._calls.add(cid, type_, callback)
        if timeout is UNDEFINED:
            timeout = self.ack_timeout
        if timeout is not None:
            timer = get_hub().loop.timer(timeout / 1000.0)
            timer.start(self._on_timeout, cid)
            entry[2] = timer
        self.write_frame(frame)

    def respond(self, rid, err=None, data=None, **fields):
        """Answer the event whose cid was ``rid``; errors keep their name, message and stack.
        An answer larger than ``max_frame`` is replaced by a ``ResourceLimitError`` answer."""
        message = {'rid': rid, 'data': data}
        if err is not None:
            message['error'] = wire_error(err)
        message.update(fields)
        try:
            self.write(message)
        except ResourceLimitError as exc:
            log.warning('%s', exc)
            self.write({'rid': rid, 'data': None, 'error': wire_error(exc)})

    def frame(self, message):
        """``message`` framed for this link; ``ResourceLimitError`` when over ``max_frame``."""
        payload = codec.encode(message).encode('utf-8')
        if len(payload) > self.max_frame:
            raise ResourceLimitError(
                'IPC link %s cannot carry a message of %d bytes (the limit is %d bytes)'
                % (self.name, len(payload), self.max_frame), size=len(payload), limit=self.max_frame)
        return HEADER.pack(len(payload)) + payload

    def write(self, message):
        """Frame and send one message (dropped when the link is closed); ``ResourceLimitError``
        (nothing sent) when it is larger than ``max_frame``."""
        if not self.closed:
            self.write_frame(self.frame(message))

    def write_frame(self, frame):
        """Send a frame made by :meth:`frame` (dropped when the link is closed)."""
        if self.closed:
            return
        if self._out or self._corked:
            self._out += frame
        else:
            try:
                sent = os.write(self.fd, frame)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self.close('write failed: %s' % exc)
                return
            if sent < len(frame):
                self._out += frame[sent:]
                self._watch_writable()
        if len(self._out) > MAX_OUTBOUND:
            self.close('the peer stopped reading (%d bytes unsent)' % len(self._out))

    @property
    def unsent(self):
        """Bytes written to the link that the peer has not taken yet."""
        return len(self._out)

    def cork(self):
        """Hold writes in the buffer (batching) until :meth:`uncork`."""
        self._corked = True

    def uncork(self):
        """Send what :meth:`cork` held, in as few writes as the kernel allows."""
        self._corked = False
        if self._out and not self.closed:
            self._watch_writable()

    def drain(self, timeout=1.0):
        """Wait (cooperatively) up to ``timeout`` seconds until every queued byte is written."""
        with gevent.Timeout(timeout, False):
            while self._out and not self.closed:
                gevent.sleep(0.01)
        return not self._out

    def wait_closed(self, timeout=None):
        """Wait until the pump has read everything up to the peer's end of the link."""
        if self._pump is not None and self._pump is not gevent.getcurrent():
            self._pump.join(timeout)

    def close(self, reason='closed'):
        """End the link: fail every pending call, stop the pump, close the fd."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if self._write_watcher is not None:
            self._write_watcher.stop()
            self._write_watcher.close()
            self._write_watcher = None
        _open_fds.discard(self.fd)
        try:
            os.close(self.fd)
        except OSError:
            pass
        error = self._broken_error()
        for _event, callback, timer in self._calls.pop_all():
            if timer is not None:
                timer.close()
            self._call(callback, error, None)
        if self._pump is not None and self._pump is not gevent.getcurrent():
            self._pump.kill(block=False)
        if self.on_close is not None:
            self.on_close(self, reason)

    def _broken_error(self):
        return BadConnectionError('IPC link %s was closed before a response arrived (%s)'
                                  % (self.name, self.close_reason))

    def _watch_writable(self):
        if self._write_watcher is None:
            self._write_watcher = get_hub().loop.io(self.fd, 2)
            self._write_watcher.start(self._flush)

    def _flush(self):
        try:
            sent = os.write(self.fd, self._out)
        except BlockingIOError:
            return
        except OSError as exc:
            gevent.spawn(self.close, 'write failed: %s' % exc)
            return
        del self._out[:sent]
        if not self._out:
            self._write_watcher.stop()
            self._write_watcher.close()
            self._write_watcher = None

    def _run(self):
        """The pump: read whole frames, dispatch them, yield after every chunk."""
        buf = bytearray()
        reader = get_hub().loop.io(self.fd, 1)
        hub = get_hub()
        reason = 'the peer closed the link'
        try:
            while not self.closed:
                try:
                    chunk = os.read(self.fd, READ_SIZE)
                except BlockingIOError:
                    hub.wait(reader)
                    continue
                except OSError as exc:
                    if exc.errno == errno.EINTR:
                        continue
                    reason = 'read failed: %s' % exc
                    break
                if not chunk:
                    break
                buf += chunk
                violation = self._dispatch_frames(buf)
                if violation:
                    reason = violation
                    break
                gevent.sleep(0)
        finally:
            reader.close()
        self.close(reason)

    def _dispatch_frames(self, buf):
        """Dispatch every complete frame in ``buf`` (consumed); a reason to close on garbage."""
        start = 0
        size = len(buf)
        while size - start >= 4:
            (length,) = HEADER.unpack_from(buf, start)
            if length > self.max_frame:
                return 'frame of %d bytes exceeds the limit of %d' % (length, self.max_frame)
            end = start + 4 + length
            if end > size:
                break
            message = codec.decode(bytes(buf[start + 4:end]))
            start = end
            if type(message) is not dict:
                log.warning('IPC link %s: ignored a message that is not a JSON object', self.name)
                continue
            self._dispatch(message)
            if self.closed:
                return 'closed'
        del buf[:start]
        return None

    def _dispatch(self, message):
        rid = message.get('rid')
        if rid is not None:
            entry = self._calls.pop(rid)
            if entry is None:
                return
            if entry[2] is not None:
                entry[2].close()
            self._call(entry[1], hydrate(message.get('error')), message.get('data'))
            return
        if type(message.get('type')) is not str:
            log.warning('IPC link %s: ignored a message without a type', self.name)
            return
        cid = message.get('cid')
        respond = partial(self.respond, cid) if cid is not None else _noop_respond
        try:
            self.on_message(message, respond)
        except Exception:
            log.exception('IPC link %s: the handler of %r failed', self.name, message['type'])

    def _on_timeout(self, cid):
        entry = self._calls.pop(cid)
        if entry is not None:
            entry[2].close()
            gevent.spawn(self._call, entry[1], TimeoutError('IPC response timed out'), None)

    def _call(self, callback, err, data):
        try:
            callback(err, data)
        except Exception:
            log.exception('IPC link %s: a response callback failed', self.name)
