"""Health and metrics of a running cluster: scraped over HTTP on the public
port and on metricsPort, parsed with prometheus_client's own parser."""

import json
import os
import signal
import socket
import sys
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from gsc.cluster import options as options_module
from gsc.errors import InvalidOptionsError
from kit import free_port, wait_until
from master_harness import start_cluster

CLUSTER = {'workers': 2, 'brokers': 1, 'workerController': 'tests.controllers.metrics_worker',
           'wsgiApp': 'tests.controllers.metrics_worker:app', 'logLevel': 0}
PROMETHEUS_TYPE = 'text/plain; version=0.0.4; charset=utf-8'


def get(port, path):
    """``(status, content type, body text)`` of ``GET path`` on 127.0.0.1:port."""
    try:
        with urllib.request.urlopen('http://127.0.0.1:%d%s' % (port, path), timeout=8) as answer:
            return answer.status, answer.headers.get('Content-Type'), answer.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers.get('Content-Type'), exc.read().decode()


def scrape(port, path='/metrics'):
    """``{(sample name, ((label, value), ...)): value}`` of a scrape."""
    status, content_type, text = get(port, path)
    assert (status, content_type) == (200, PROMETHEUS_TYPE), text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def total(samples, name):
    """The sum of every series of ``name`` (what PromQL's sum() gives)."""
    return sum(value for (sample, _labels), value in samples.items() if sample == name)


def value(samples, name, **labels):
    """The series of ``name`` with exactly ``labels``."""
    return samples[(name, tuple(sorted((k, str(v)) for k, v in labels.items())))]


def health(port):
    """``(status, decoded JSON body)`` of the health path."""
    status, content_type, text = get(port, '/health')
    assert content_type == 'application/json'
    return status, json.loads(text)


def health_is(port, status, reason=None):
    """A check for :func:`kit.wait_until`: health answers ``status`` (with a reason that starts
    with ``reason``).  A connection reset counts as no answer yet: the kernel may have queued it on
    the listener of a worker that was just killed."""
    def check():
        try:
            answer = health(port)
        except ConnectionError:
            return None
        return answer if answer[0] == status and (reason is None or any(
            text.startswith(reason) for text in answer[1].get('reasons', ()))) else None
    return check


class Client:
    """A protocol client (websockets' sync client) that knows its worker."""

    def __init__(self, port, rcvbuf=None):
        sock = socket.create_connection(('127.0.0.1', port), timeout=5)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.ws = connect('ws://127.0.0.1:%d/socketcluster/' % port, sock=sock, open_timeout=5,
                          legacy=True)
        self.cid = 0
        self.worker = self.call('#handshake', {})['worker']

    def call(self, event, data):
        """Send ``event`` with a cid; its answer (the 'worker' event is kept in it)."""
        self.cid += 1
        self.ws.send(json.dumps({'event': event, 'data': data, 'cid': self.cid}))
        seen = {}
        while True:
            packet = json.loads(self.ws.recv(5))
            if packet.get('event') == 'worker':
                seen['worker'] = packet['data']
            if packet.get('rid') == self.cid:
                return dict(packet, **seen)

    def close(self):
        """Close the connection."""
        self.ws.close()


def clients_on_both_workers(request, port, per_worker=2, attempts=40):
    """``per_worker`` clients on each of the two workers (every other one closed)."""
    chosen = {0: [], 1: []}
    for _ in range(attempts):
        client = Client(port)
        request.addfinalizer(client.close)
        if len(chosen[client.worker]) < per_worker:
            chosen[client.worker].append(client)
        else:
            client.close()
        if all(len(made) == per_worker for made in chosen.values()):
            return chosen[0] + chosen[1]
    raise AssertionError('connections did not reach both workers')


def child_pid(master, event, id_):
    """The pid of broker or worker ``id_`` from its start event."""
    return master.expect(event, data={'id': id_})['data']['pid']


def test_a_scrape_of_the_public_port_sees_every_worker_and_the_traffic(request):
    master = start_cluster(request, dict(CLUSTER, ackTimeout=300, maxOutboundBytes=256 * 1024))
    before = scrape(master.port)
    assert value(before, 'gsc_worker_up', worker=0) == value(before, 'gsc_worker_up', worker=1) == 1
    assert value(before, 'gsc_broker_up', broker=0) == 1
    assert value(before, 'gsc_broker_link_up', worker=1, broker=0) == 1
    assert total(before, 'gsc_handshakes_total') == 0
    assert health(master.port) == (200, {'status': 'ok', 'workers': 2, 'brokers': 1})

    clients = clients_on_both_workers(request, master.port)
    for client in clients:
        assert client.call('#subscribe', {'channel': 'room'})['rid'] == client.cid
    assert clients[0].call('#publish', {'channel': 'room', 'data': 'hi'})['rid'] == clients[0].cid
    clients[-1].call('ask', None)  # the server's question is never answered: an ack timeout
    slow = Client(master.port, rcvbuf=4096)
    slow.ws.send(json.dumps({'event': 'flood', 'data': 400}))  # 25 MiB it never reads

    after = wait_until(lambda: (lambda s: s if total(s, 'gsc_ack_timeouts_total') == 1
                                and total(s, 'gsc_slow_consumer_closes_total') == 1 else None)(
        scrape(master.port)), timeout=10, interval=0.1)
    for worker in (0, 1):
        assert value(after, 'gsc_handshakes_total', worker=worker) >= 2
        assert value(after, 'gsc_clients', worker=worker) >= 2
        assert value(after, 'gsc_subscriptions', worker=worker) == 2
        assert value(after, 'gsc_subscribes_total', worker=worker) == 2
        # handshake and subscribe of 2 clients; each got the 'worker' event and 2 answers
        assert value(after, 'gsc_messages_received_total', worker=worker) >= 4
        assert value(after, 'gsc_messages_sent_total', worker=worker) >= 6
        assert value(after, 'gsc_outbound_buffered_bytes', worker=worker) >= 0
    assert total(after, 'gsc_connections') >= 4
    assert total(after, 'gsc_publishes_total') == 1
    # the publish reached the 4 subscribers: 4 more messages sent than before it
    assert total(after, 'gsc_messages_sent_total') >= 4 * 4 + 1


def test_enabled_paths_never_reach_the_app_and_switched_off_ones_do(request):
    master = start_cluster(request, CLUSTER)
    assert get(master.port, '/elsewhere')[2] == 'from the app'
    assert get(master.port, '/metrics')[1] == PROMETHEUS_TYPE
    assert health(master.port)[0] == 200

    off = start_cluster(request, dict(CLUSTER, healthPath=None, metricsPath=None))
    assert get(off.port, '/health') == (200, 'text/plain', 'from the app')
    assert get(off.port, '/metrics') == (200, 'text/plain', 'from the app')


def test_health_turns_503_while_a_broker_is_stopped_and_when_a_worker_dies(request):
    master = start_cluster(request, dict(CLUSTER, rebootWorkerOnCrash=False))
    broker_pid = child_pid(master, 'brokerStart', 0)
    worker_pid = child_pid(master, 'workerStart', 1)
    assert health(master.port)[0] == 200

    os.kill(broker_pid, signal.SIGSTOP)
    try:
        status, body = health(master.port)
        assert (status, body) == (503, {'status': 'unavailable', 'reasons': ['broker 0 is silent']})
        assert value(scrape(master.port), 'gsc_broker_up', broker=0) == 0
    finally:
        os.kill(broker_pid, signal.SIGCONT)
    wait_until(health_is(master.port, 200), timeout=10, interval=0.1)

    os.kill(worker_pid, signal.SIGKILL)
    wait_until(health_is(master.port, 503, 'worker 1 is down'), timeout=10, interval=0.1)
    samples = scrape(master.port)
    assert value(samples, 'gsc_worker_up', worker=1) == 0
    assert value(samples, 'gsc_worker_up', worker=0) == 1


def test_metrics_port_serves_both_paths_and_counts_restarts_and_reconnects(request):
    metrics_port = free_port()
    master = start_cluster(request, dict(CLUSTER, metricsPort=metrics_port))
    assert get(master.port, '/metrics') == (200, 'text/plain', 'from the app')
    assert get(master.port, '/health') == (200, 'text/plain', 'from the app')
    assert get(metrics_port, '/elsewhere')[0] == 404
    assert health(metrics_port)[0] == 200
    samples = scrape(metrics_port)
    assert value(samples, 'gsc_worker_restarts_total', worker=0) == 0
    assert value(samples, 'gsc_broker_reconnects_total', worker=0, broker=0) == 0

    worker_pid = child_pid(master, 'workerStart', 1)
    os.kill(worker_pid, signal.SIGSTOP)
    try:
        assert health(metrics_port) == (503, {'status': 'unavailable',
                                              'reasons': ['worker 1 is silent']})
    finally:
        os.kill(worker_pid, signal.SIGCONT)
    wait_until(health_is(metrics_port, 200), timeout=10, interval=0.1)

    os.kill(child_pid(master, 'brokerStart', 0), signal.SIGKILL)
    os.kill(child_pid(master, 'workerStart', 0), signal.SIGKILL)
    master.expect('brokerStart', data={'id': 0, 'respawn': True})
    master.expect('workerStart', data={'id': 0, 'respawn': True})
    wait_until(health_is(metrics_port, 200), timeout=10, interval=0.1)
    samples = scrape(metrics_port)
    # at least once: a link that reconnects while the broker restarts may be lost again
    assert value(samples, 'gsc_broker_reconnects_total', worker=1, broker=0) >= 1
    assert value(samples, 'gsc_broker_restarts_total', broker=0) == 1
    assert value(samples, 'gsc_worker_restarts_total', worker=0) == 1
    assert value(samples, 'gsc_worker_restarts_total', worker=1) == 0


def test_a_lost_redis_link_turns_health_503_and_is_counted(request, redis_server):
    master = start_cluster(request, dict(
        CLUSTER, workers=1, brokers=0, brokerEngine='redis',
        brokerEngineOptions={'url': redis_server.url}))
    assert health(master.port)[0] == 200
    redis_server.stop()
    wait_until(health_is(master.port, 503, 'worker 0: the redis link is down'), timeout=10, interval=0.1)
    redis_server.start()
    wait_until(health_is(master.port, 200), timeout=10, interval=0.1)
    samples = scrape(master.port)
    assert value(samples, 'gsc_redis_reconnects_total', worker=0) == 1
    assert value(samples, 'gsc_redis_link_up', worker=0) == 1


@pytest.mark.parametrize('bad', [{'healthPath': 'health'}, {'metricsPath': '/socketcluster/'},
                                 {'metricsPort': 8000}, {'metricsPort': '9100'},
                                 {'healthPath': '/x', 'metricsPath': '/x'}])
def test_bad_health_and_metrics_options_are_refused(bad):
    options = options_module.merge(dict(bad, workerController='x'))
    with pytest.raises(InvalidOptionsError):
        options_module.validate(options)


def test_run_py_exits_with_1_when_the_metrics_port_is_taken(spawn):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = spawn([sys.executable, 'run.py', '-p', str(free_port()),
                      '--wc', 'tests.controllers.metrics_worker'],
                     env={'SOCKETCLUSTER_OPTIONS': json.dumps({'metricsPort': port})})
        assert proc.wait(20) == 1
    assert 'Cannot listen on metricsPort %d - Address already in use' % port in proc.stdout.read()
