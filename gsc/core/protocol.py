"""The SocketCluster protocol v1 without I/O: frames in, packets out, and back.

A frame is classified into :class:`Ping`, :class:`Pong`, :class:`Event`,
:class:`Response` or :class:`Raw` packets (a JSON array is a batch: one packet per
element, in order).  The builders produce the packets a peer sends; :class:`CallTable`
keeps the calls that wait for an answer (cid -> callback); :class:`Responder` answers one
inbound call at most once.  Both the server socket and :mod:`gsc.client` are built on it.
"""

import logging
from collections import namedtuple

from . import codec
from ..errors import InvalidActionError, SCError, dehydrate

log = logging.getLogger(__name__)

PING = codec.PING
PONG = codec.PONG


class _Undefined:
    """JavaScript's ``undefined``: a ``data`` key that is left out of the packet."""

    __slots__ = ()

    def __repr__(self):
        return 'UNDEFINED'

    def __bool__(self):
        return False


UNDEFINED = _Undefined()


def none_if_undefined(value):
    """What Python code sees for a value that may be left out: None for ``UNDEFINED``."""
    return None if value is UNDEFINED else value

Ping = namedtuple('Ping', '')
Pong = namedtuple('Pong', '')
Event = namedtuple('Event', 'event data cid')
Response = namedtuple('Response', 'rid error data')
Raw = namedtuple('Raw', 'frame')
PING_PACKET = Ping()
PONG_PACKET = Pong()

# Socket states and the transitions between them (h11 style: a table, not ifs).
CONNECTING = 'connecting'
OPEN = 'open'
CLOSED = 'closed'
TRANSITIONS = {
    (CONNECTING, 'handshake'): OPEN,
    (CONNECTING, 'close'): CLOSED,
    (OPEN, 'close'): CLOSED,
}

AUTHENTICATED = 'authenticated'
UNAUTHENTICATED = 'unauthenticated'


def transition(state, action):
    """The state after ``action`` in ``state``; None when the action does not apply."""
    return TRANSITIONS.get((state, action))


def classify(obj, frame):
    """The packet for one decoded value; ``frame`` is what a raw packet reports."""
    if type(obj) is dict:
        event = obj.get('event')
        if event is not None:
            if type(event) is not str:
                return Raw(frame)
            return Event(event, obj.get('data', UNDEFINED), obj.get('cid'))
        rid = obj.get('rid')
        if rid is not None:
            return Response(rid, obj.get('error'), obj.get('data', UNDEFINED))
    return Raw(frame)


class BatchTooLarge(ValueError):
    """A batch frame holds more packets than allowed (``count`` > ``limit``)."""

    def __init__(self, count, limit):
        super().__init__('A batch of %d packets exceeds maxBatchPackets (%d)' % (count, limit))
        self.count = count
        self.limit = limit


def parse_frame(frame, decode=codec.decode, max_packets=None):
    """The packets of one inbound frame, in order.

    A batch of more than ``max_packets`` elements raises :class:`BatchTooLarge` before any
    element is classified.
    """
    if frame == PONG:
        return (PONG_PACKET,)
    if frame == PING:
        return (PING_PACKET,)
    obj = decode(frame)
    if type(obj) is list:
        if max_packets is not None and len(obj) > max_packets:
            raise BatchTooLarge(len(obj), max_packets)
        return tuple(classify(item, frame) for item in obj)
    return (classify(obj, frame),)


def event_packet(event, data=UNDEFINED, cid=None):
    """``{"event", "data"?, "cid"?}``."""
    packet = {'event': event}
    if data is not UNDEFINED:
        packet['data'] = data
    if cid:
        packet['cid'] = cid
    return packet


def defined(**fields):
    """``fields`` without those that are ``UNDEFINED``, in order: a left-out value stays left
    out of a packet, as JavaScript's ``JSON.stringify`` drops ``undefined``."""
    return {name: value for name, value in fields.items() if value is not UNDEFINED}


def response_packet(rid, error=None, data=UNDEFINED):
    """``{"rid", "error"?, "data"?}`` with the error dehydrated."""
    packet = {'rid': rid}
    if error is not None and error is not False:
        packet['error'] = dehydrate(error)
    if data is not UNDEFINED:
        packet['data'] = data
    return packet


class CallTable:
    """Outbound calls waiting for a response: cid -> [event name, callback, timer]."""

    __slots__ = ('_last_cid', '_pending')

    def __init__(self):
        self._last_cid = 0
        self._pending = {}

    def next_cid(self):
        """A new call id (1, 2, ...)."""
        self._last_cid += 1
        return self._last_cid

    def add(self, cid, event, callback, timer=None):
        """Remember a call; the entry list is returned so a timer can be attached later."""
        entry = [event, callback, timer]
        self._pending[cid] = entry
        return entry

    def pop(self, rid):
        """The entry answered by ``rid``, removed; None for an unknown rid."""
        try:
            return self._pending.pop(rid)
        except (KeyError, TypeError):
            return None

    def pop_all(self):
        """Every waiting entry, removed (the connection is gone)."""
        entries = list(self._pending.values())
        self._pending.clear()
        return entries

    def __len__(self):
        return len(self._pending)


REPLY_ENCODING_FAILED = 'Server failed to encode the response'


class Responder:
    """``respond(err=None, data=UNDEFINED)`` for one inbound call; a no-op without a cid.

    ``send(packet)`` encodes and sends a packet; it raises (or returns an exception) when
    the packet cannot be encoded, and the caller then gets an error reply instead.  When
    the call carried no data (``data_absent``), a reply whose data is None is sent without
    data: a handler that echoes what it got keeps JavaScript's ``undefined`` apart from
    ``null``.  ``sent`` turns true once a reply has left.
    """

    __slots__ = ('cid', '_send', 'sent', 'data_absent')

    def __init__(self, cid, send, data_absent=False):
        self.cid = cid
        self._send = send
        self.sent = False
        self.data_absent = data_absent

    def __call__(self, err=None, data=UNDEFINED):
        if not self.cid:
            return
        if self.sent:
            raise InvalidActionError('Response %s has already been sent' % self.cid)
        if data is None and self.data_absent:
            data = UNDEFINED
        failure = self._try_send(err, data)
        if failure is not None:
            log.warning('could not encode the response to call %r (%s: %s); sending an error '
                        'instead', self.cid, type(failure).__name__, str(failure)[:200])
            failure = self._try_send(SCError(REPLY_ENCODING_FAILED), UNDEFINED)
        self.sent = failure is None

    def _try_send(self, err, data):
        """None when the reply left; the exception that stopped it otherwise."""
        try:
            outcome = self._send(response_packet(self.cid, err, data))
        except Exception as exc:  # any codec failure, including a custom codec's own errors
            return exc
        return outcome if isinstance(outcome, BaseException) else None
