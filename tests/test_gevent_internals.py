"""The private parts of gevent that gsc uses (gsc/gevent_internals.py) are still there and
behave as gsc expects: this fails first when an upgrade of gevent changes them."""

import _socket

import gevent
from gevent import pywsgi, socket

from gsc.gevent_internals import count_file_object, raw_socket, read_watcher


def test_a_gevent_socket_wraps_a_non_blocking_standard_socket():
    left, right = socket.socketpair()
    try:
        raw = raw_socket(left)
        assert isinstance(raw, _socket.socket) and raw.fileno() == left.fileno()
        assert raw.gettimeout() == 0.0
        try:
            raw.recv(10)
        except BlockingIOError:
            pass
        else:
            raise AssertionError('a recv with nothing to read returned instead of raising')
        right.sendall(b'hi')
        gevent.sleep(0.01)
        assert raw.recv(10) == b'hi'
        assert raw_socket(object()) is None
    finally:
        left.close()
        right.close()


def test_the_read_watcher_fires_when_input_arrives():
    left, right = socket.socketpair()
    fired = []
    try:
        watcher = read_watcher(left)
        watcher.start(lambda: fired.append(True))
        right.sendall(b'x')
        with gevent.Timeout(2):
            while not fired:
                gevent.sleep(0.01)
        watcher.stop()
    finally:
        left.close()
        right.close()


def test_a_counted_file_object_keeps_the_socket_open_until_it_is_closed():
    left, right = socket.socketpair()
    try:
        count_file_object(left)
        left.close()
        assert left.fileno() != -1, 'the socket closed although a reader was counted'
        left._decref_socketios()  # what closing a SocketIO does (socket.SocketIO.close)
        assert left.fileno() == -1
    finally:
        right.close()


def test_pywsgi_still_has_the_client_error_hook_gsc_overrides():
    assert callable(getattr(pywsgi.WSGIHandler, '_handle_client_error', None))
