"""WSGI apps in a real cluster (``python run.py``): a view publishes to a socket on another
worker through the brokers, a raising view gets a 500 while sockets keep working, a
blocking call in a view does not stall the worker, a misnamed wsgiApp fails at start."""

import http.client
import json
import threading
import time

import pytest
from websockets.sync.client import connect

from master_harness import free_port, group_members
from test_run import run_py, wait_for_line  # noqa: F401 (run_py is a fixture)

pytestmark = pytest.mark.timeout(90)
TEST_APP = 'tests.wsgi_cluster_app:app'


class SampleClient:
    """A raw protocol client of the sample worker controller (controllers/worker.py)."""

    def __init__(self, port):
        self.ws = connect('ws://127.0.0.1:%d/socketcluster/' % port, open_timeout=5, legacy=True)
        self.cid = 0
        self.call('#handshake', {})

    def recv(self, timeout=5):
        """The next packet (pings are answered and skipped)."""
        while True:
            frame = self.ws.recv(timeout)
            if frame == '#1':
                self.ws.send('#2')
                continue
            return json.loads(frame)

    def call(self, event, data=None):
        """Emit ``event`` with a cid; its answer's data (AssertionError on an error)."""
        self.cid += 1
        self.ws.send(json.dumps({'event': event, 'data': data, 'cid': self.cid}))
        packet = self.recv()
        assert packet.get('rid') == self.cid and 'error' not in packet, packet
        return packet.get('data')

    def close(self):
        self.ws.close()


def http_request(port, method, path, body=None):
    """``(status, body)`` of one request on a fresh connection."""
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={'Content-Type': 'application/json'})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def start(run_py, *args):  # noqa: F811
    """``python run.py --wc worker --bc broker ARGS`` (the sample controllers) on a free port,
    once every process is up; ``(proc, port)``."""
    port = free_port()
    proc = run_py('-p', str(port), '--wc', 'worker', '--bc', 'broker', *args)
    lines = wait_for_line(proc, 'Broker count')
    assert any('Broker count' in line for line in lines), lines
    return proc, port


def test_a_view_publishes_to_a_socket_on_another_worker(run_py):  # noqa: F811
    _proc, port = start(run_py, '-w', '2', '--app', TEST_APP)
    status, page = http_request(port, 'GET', '/')
    assert status == 200 and b'gsc chat' in page
    assert http_request(port, 'GET', '/static/socketcluster.min.js')[0] == 200
    client = SampleClient(port)
    try:
        socket_pid = client.call('whoami')['pid']
        assert client.call('#subscribe', {'channel': 'room/lobby'}) is None
        publishers = set()
        for n in range(40):  # each request may land on either worker (SO_REUSEPORT)
            status, body = http_request(port, 'POST', '/rooms/lobby/messages', {'text': 'n%d' % n})
            assert status == 200, body
            publishers.add(json.loads(body)['pid'])
            assert client.recv() == {'event': '#publish', 'data': {
                'channel': 'room/lobby', 'data': {'from': 'http', 'text': 'n%d' % n}}}
            if publishers - {socket_pid}:
                break
        assert publishers - {socket_pid}, 'no request reached the other worker'
        assert client.call('channels') == ['room/lobby']
    finally:
        client.close()


def test_a_raising_view_gets_500_and_sockets_keep_working(run_py):  # noqa: F811
    proc, port = start(run_py, '-w', '1', '--app', TEST_APP)
    client = SampleClient(port)
    try:
        pid = client.call('whoami')['pid']
        for _ in range(3):
            assert http_request(port, 'GET', '/boom')[0] == 500
        assert client.call('echo', 'alive') == 'alive'
        assert client.call('whoami')['pid'] == pid
        lines = wait_for_line(proc, 'RuntimeError: the view broke')
        assert any('Traceback' in line for line in lines)
    finally:
        client.close()


def test_a_blocking_call_in_a_view_does_not_stall_the_worker(run_py):  # noqa: F811
    """run.py monkey-patches before anything else: time.sleep in a view yields."""
    _proc, port = start(run_py, '-w', '1', '--app', TEST_APP)
    client = SampleClient(port)
    answers = []
    sleeper = threading.Thread(target=lambda: answers.append(http_request(port, 'GET', '/sleep')))
    try:
        sleeper.start()
        time.sleep(0.2)
        started = time.monotonic()
        assert client.call('echo', 'during the sleep') == 'during the sleep'
        assert time.monotonic() - started < 0.5
        sleeper.join(10)
        assert answers == [(200, b'slept')]
    finally:
        client.close()


@pytest.mark.parametrize('name, message', [
    ('nosuch_module:app', "Failed to load wsgiApp 'nosuch_module' - ModuleNotFoundError"),
    ('chat_app:missing', "The wsgiApp 'chat_app:missing' is not a WSGI application"),
])
def test_a_misnamed_wsgi_app_fails_at_start_naming_it(run_py, name, message):  # noqa: F811
    proc = run_py('-w', '1', '-p', str(free_port()), '--wc', 'worker', '--app', name)
    assert proc.wait(20) == 1  # the start fails: everything stopped, nothing respawned
    output = proc.stdout.read()
    assert message in output
    assert 'gsc could not start: the worker 0 exited with code 78 while starting' in output
    assert group_members(proc.pid) == []


def test_a_wsgi_app_option_that_is_not_a_name_exits_with_1(run_py):  # noqa: F811
    proc = run_py(env={'SOCKETCLUSTER_OPTIONS': json.dumps({'workerController': 'worker',
                                                           'wsgiApp': 5})})
    assert proc.wait(20) == 1
    assert "The wsgiApp option must be a 'module:attr' name" in proc.stdout.read()
