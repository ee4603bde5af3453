"""A closed connection is freed by reference counting as it ends, not by a later full
collection (: memory back after a mass close).  gc is off in these tests."""

import gc
import weakref

import pytest

from conftest import handshake, wait_until


def client_closes(client, socket):
    """The client's closing handshake (1000)."""
    client.close()


def client_drops_tcp(client, socket):
    """The client's TCP connection ends without a close frame (the parser's EOFError)."""
    client.sock.close()


def server_disconnects(client, socket):
    """The server closes with 4000."""
    socket.disconnect(4000, 'bye')


def client_breaks_the_protocol(client, socket):
    """A frame with a reserved opcode: the server fails the connection (1002)."""
    client.sock.sendall(b'\x8f\x80abcd')


@pytest.fixture
def gc_off():
    """gc disabled for the test (and the garbage of earlier tests collected first)."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()


@pytest.mark.parametrize('end', [client_closes, client_drops_tcp, server_disconnects,
                                 client_breaks_the_protocol])
def test_a_closed_connection_is_freed_without_a_collection(make_server, raw, gc_off, end):
    server = make_server({'pingInterval': 60000, 'pingTimeout': 120000})
    refs = []
    server.on('connection', lambda socket, status: refs.append(
        (weakref.ref(socket), weakref.ref(socket.socket), weakref.ref(socket.socket.protocol))))
    client = raw(server)
    assert handshake(client)['rid'] == 1
    wait_until(lambda: refs)
    socket_ref = refs[0][0]
    end(client, socket_ref())
    wait_until(lambda: server.ws_connections == 0)
    wait_until(lambda: all(ref() is None for ref in refs[0]))
    assert not server.clients and not server.pending_clients
    other = raw(server)
    assert handshake(other)['rid'] == 1  # the server still serves
