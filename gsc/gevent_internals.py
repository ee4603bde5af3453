"""Every place gsc reaches into gevent's private API, in one module, with why.

gevent's cooperative socket wraps a standard socket and an io watcher; gsc uses them
directly on its hot paths, where going through gevent's public methods would cost a
greenlet switch or a copy per call.  pywsgi's handler has one private hook gsc overrides.
tests/test_gevent_internals.py fails when an upgrade of gevent changes any of them: fix
them here, nowhere else.

- ``socket._sock``: the non-blocking standard socket under a gevent socket.  A ``send`` or
  ``recv`` on it returns at once (or raises BlockingIOError) without parking the greenlet,
  so the flush callback writes from the hub and the lean upgrade reader reads what already
  arrived.
- ``socket._read_event``: the io watcher gevent waits on for input; an idle connection's
  reader ends and this watcher alone wakes a new one (a parked greenlet costs ~5 KB).
- ``socket._io_refs``: the count of open file objects that ``makefile()`` keeps, so the
  socket closes only once its reader is closed too; gsc makes its own reader (one that
  first returns bytes already read) and counts it the same way.
- ``WSGIHandler._handle_client_error``: the hook pywsgi calls when a request cannot be read;
  :class:`gsc.server.http.SCHandler` overrides it to answer its own refusals (414, 431, 400).
"""

from gevent.socket import socket as GeventSocket


def raw_socket(sock):
    """The non-blocking standard socket under the gevent socket ``sock``; None for any other
    kind of socket (an SSL socket must be written through its own methods)."""
    return sock._sock if type(sock) is GeventSocket else None


def read_watcher(sock):
    """The io watcher that gevent's socket ``sock`` waits on for input."""
    return sock._read_event


def count_file_object(sock):
    """Count one more file object reading ``sock``, as ``sock.makefile()`` does."""
    sock._io_refs += 1
