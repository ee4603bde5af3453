"""A worker respawned after a kill -9 listens at once: a client that
connects while its (1 s) controller runs is served once the controller ran, nothing failed;
the first start still listens only after the controller ran."""

import json
import os
import signal
import socket
import time

from websockets.client import ClientProtocol
from websockets.frames import TEXT
from websockets.uri import parse_uri

from kit import client_frame, wait_until
from master_harness import start_cluster

OPTIONS = {'workers': 1, 'brokers': 1, 'workerController': 'tests.controllers.slow_worker',
           'logLevel': 1}


def connect_when_listening(port, seconds=20):
    """``(socket, time.time())`` of the first TCP connection the port accepts (polled every 5 ms)."""
    def connected():
        try:
            return socket.create_connection(('127.0.0.1', port), timeout=2), time.time()
        except ConnectionRefusedError:
            return None
    return wait_until(connected, timeout=seconds, interval=0.005,
                      message='nothing listened on port %d within %s s' % (port, seconds))


class EagerClient:
    """Sends the upgrade and its first packets at once, without waiting for any answer."""

    def __init__(self, sock, port, packets):
        self.sock = sock
        self.protocol = ClientProtocol(parse_uri('ws://127.0.0.1:%d/socketcluster/' % port))
        self.protocol.send_request(self.protocol.connect())
        upgrade = b''.join(self.protocol.data_to_send())
        sock.sendall(upgrade + b''.join(client_frame(json.dumps(p)) for p in packets))
        self.received = []

    def send(self, packet):
        self.sock.sendall(client_frame(json.dumps(packet)))

    def packet(self, match, seconds=10):
        """The first packet received for which ``match(packet)`` is true."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for packet in self.received:
                if match(packet):
                    self.received.remove(packet)
                    return packet
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            data = self.sock.recv(65536)
            if not data:
                break
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                if getattr(event, 'opcode', None) is TEXT and event.data != b'#1':
                    self.received.append(json.loads(event.data))
        raise AssertionError('no matching packet; received %s' % self.received)

    def answer(self, cid):
        return self.packet(lambda packet: packet.get('rid') == cid)


FIRST_PACKETS = [{'event': '#handshake', 'data': {}, 'cid': 1},
                 {'event': 'ranAt', 'cid': 2},
                 {'event': '#subscribe', 'data': {'channel': 'room'}, 'cid': 3}]


def serve_eager_client(sock, port):
    """Handshake, emit and subscribe sent at once: every answer without an error, then a
    publish reaches the subscription; the controller's ``ranAt`` time."""
    client = EagerClient(sock, port, FIRST_PACKETS)
    try:
        assert 'error' not in client.answer(1)
        ran_at = client.answer(2)
        assert 'error' not in ran_at
        assert client.answer(3) == {'rid': 3}
        client.send({'event': '#publish', 'data': {'channel': 'room', 'data': 'hello'}, 'cid': 4})
        assert client.packet(lambda p: p.get('event') == '#publish') == {
            'event': '#publish', 'data': {'channel': 'room', 'data': 'hello'}}
        assert client.answer(4) == {'rid': 4}
        return ran_at['data']
    finally:
        sock.close()


def test_a_respawned_worker_takes_connections_while_its_controller_runs(request):
    cluster = start_cluster(request, OPTIONS)
    worker = cluster.expect('workerStart', data={'id': 0})
    os.kill(worker['data']['pid'], signal.SIGKILL)
    cluster.expect('workerExit', data={'id': 0, 'pid': worker['data']['pid']})
    sock, connected_at = connect_when_listening(cluster.port)
    ran_at = serve_eager_client(sock, cluster.port)
    assert connected_at < ran_at
    respawned = cluster.expect('workerStart', data={'id': 0, 'respawn': True})
    assert respawned['data']['pid'] != worker['data']['pid']


def test_the_first_start_listens_only_once_the_controller_ran(request):
    cluster = start_cluster(request, OPTIONS, ready=False)
    sock, connected_at = connect_when_listening(cluster.port)
    ran_at = serve_eager_client(sock, cluster.port)
    assert connected_at > ran_at
    cluster.ready()
