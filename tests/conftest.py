"""Shared fixtures: an in-process gsc server on a free port, raw and protocol clients, a
private redis-server; the tier of each test file (TIERS). Helpers shared with bench/ are in
kit.py (``wait_until`` and ``read_response_head`` are imported here for the tests)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gsc.server import listen  # noqa: E402
from kit import ROOT, free_port, read_response_head, start_process, stop_process, wait_until  # noqa: E402,F401
from wsraw import RawClient  # noqa: E402

# -- tiers: every test file is in exactly one (a marker: ``pytest -m core``) ---------------

TIERS = {
    # sans-I/O units: no sockets, no processes (seconds)
    'core': ['test_auth.py', 'test_behaviours_codec.py', 'test_datamap.py', 'test_hasher.py',
             'test_history_store.py', 'test_options.py', 'test_presence_table.py',
             'test_protocol.py', 'test_tiers.py', 'test_upgrade.py', 'test_ratelimit.py',
             'test_channel_positions.py', 'test_layers.py', 'test_options_table.py',
             'test_gevent_internals.py'],
    # an in-process server (or broker link) with raw and Python clients
    'server': ['test_behaviours_broker.py', 'test_behaviours_client.py',
               'test_behaviours_server.py', 'test_broker_engine.py', 'test_client.py',
               'test_close_frees.py', 'test_deflate.py', 'test_exchange.py', 'test_fanout.py',
               'test_history.py', 'test_idle_reader.py', 'test_ipc.py', 'test_lean_upgrade.py',
               'test_memory.py', 'test_presence.py', 'test_server_auth.py',
               'test_server_wire.py', 'test_tls.py', 'test_wsgi.py', 'test_rate_limits.py'],
    # master, worker and broker processes (run.py, the gsc command)
    'cluster': ['test_behaviours_cluster.py', 'test_chat_sample.py', 'test_cli.py',
                'test_cluster_pubsub.py', 'test_dashboard.py', 'test_downgrade.py',
                'test_history_cluster.py', 'test_links.py', 'test_logs.py', 'test_master.py',
                'test_metrics.py', 'test_presence_cluster.py', 'test_respawn_listen.py',
                'test_run.py', 'test_rundir.py', 'test_supervision.py', 'test_wsgi_cluster.py',
                'test_aio.py', 'test_presence_restart.py'],
    # the official JavaScript client (node, tests/js)
    'interop': ['test_js_client.py', 'test_wire_data.py', 'test_history_restart.py'],
    # hostile clients and peers: floods, malformed frames and HTTP, slow readers
    'hostile': ['test_flood.py', 'test_hostile_codec.py', 'test_hostile_exchange.py',
                'test_hostile_http.py', 'test_hostile_socket.py', 'test_hostile_transport.py',
                'test_warnings.py'],
    # a private redis-server
    'redis': ['test_redis_cluster.py', 'test_redis_end_to_end.py', 'test_redis_engine.py',
              'test_redis_history.py', 'test_redis_presence.py', 'test_redis_start.py',
              'test_redis_kv.py', 'test_redis_failover.py'],
    # Chromium
    'browser': ['test_browser.py'],
}


def tiers_of(filename):
    """The tiers whose list names ``filename`` (a test file's base name)."""
    return [tier for tier, files in TIERS.items() if filename in files]


def pytest_configure(config):
    for tier in TIERS:
        config.addinivalue_line('markers', '%s: a test of the %s tier (tests/conftest.py TIERS)'
                                % (tier, tier))


def pytest_collection_modifyitems(config, items):
    """Mark each test with its file's tier; a file in no tier (or in two) stops the run."""
    unassigned = {}
    for item in items:
        filename = os.path.basename(str(item.path))
        tiers = tiers_of(filename)
        if len(tiers) != 1:
            unassigned[filename] = tiers
            continue
        item.add_marker(tiers[0])
    if unassigned:
        raise pytest.UsageError(
            '; '.join('tests/%s is in %s tiers (%s)' % (name, len(tiers), ', '.join(tiers))
                      if tiers else 'tests/%s is in no tier' % name
                      for name, tiers in sorted(unassigned.items()))
            + ': list each test file in exactly one tier of TIERS in tests/conftest.py ('
            + ', '.join(TIERS) + ')')


@pytest.fixture
def spawn(request):
    """``spawn(argv, cwd=ROOT, env=None)`` -> a running process (text stdout, stderr merged)
    in its own session; its whole process group is killed at teardown, by its id, and its
    runtime directory (XDG_RUNTIME_DIR: where a master puts its socket directories) removed."""
    started = []
    runtime = tempfile.mkdtemp(prefix='gsc-test-')
    request.addfinalizer(lambda: shutil.rmtree(runtime, ignore_errors=True))

    def start(argv, cwd=ROOT, env=None):
        proc = start_process(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=dict(os.environ, XDG_RUNTIME_DIR=runtime, **(env or {})))
        started.append(proc)
        return proc

    def cleanup():
        for proc in started:
            stop_process(proc)
    request.addfinalizer(cleanup)
    return start


@pytest.fixture
def make_server():
    """``make_server(options) -> SCServer`` listening on 127.0.0.1; all closed at teardown."""
    servers = []

    def make(options=None, **kwargs):
        server = listen(0, options, **kwargs)
        servers.append(server)
        return server
    yield make
    for server in servers:
        server.close()
        server.http_server.stop(timeout=1)


@pytest.fixture
def raw():
    """``raw(server, path='/socketcluster/', **kw) -> RawClient``; all closed at teardown."""
    clients = []

    def connect(server, path=None, **kwargs):
        url = 'ws://127.0.0.1:%d%s' % (server.port, path or server.path)
        client = RawClient(url, **kwargs)
        clients.append(client)
        return client
    yield connect
    for client in clients:
        client.close()


def recv_json(client, timeout=5):
    """The next message of ``client``, decoded."""
    return json.loads(client.recv(timeout))


def handshake(client, token=None, cid=1):
    """Send ``#handshake`` and return the decoded answer."""
    client.send(json.dumps({'event': '#handshake', 'data': {'authToken': token}, 'cid': cid}))
    return recv_json(client)


def open_socket(server, raw_connect):
    """A handshaken raw client of ``server`` and the server's ServerSocket for it."""
    sockets = []
    server.on('connection', lambda socket, status: sockets.append(socket))
    client = raw_connect(server)
    handshake(client)
    wait_until(lambda: sockets)
    return client, sockets[0]


def subscribe_then_leave(server, raw_connect, channel='foo'):
    """A raw client that handshakes, subscribes to ``channel`` and closes with 1000."""
    client = raw_connect(server)
    handshake(client)
    client.send(json.dumps({'event': '#subscribe', 'data': {'channel': channel}, 'cid': 2}))
    assert recv_json(client) == {'rid': 2}
    client.close(1000)


class RedisServer:
    """A private redis-server on a free port, started and stopped by pid."""

    def __init__(self):
        self.binary = shutil.which('redis-server')
        self.port = free_port()
        self.url = 'redis://127.0.0.1:%d/0' % self.port
        self.process = None

    def start(self):
        import redis
        self.process = start_process(
            [self.binary, '--port', str(self.port), '--bind', '127.0.0.1', '--save', '',
             '--appendonly', 'no'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)

        def answers():
            try:
                return client.ping()
            except redis.ConnectionError:
                return False
        wait_until(answers, timeout=5, interval=0.05,
                   message='redis-server did not start on port %d' % self.port)
        return self

    def stop(self):
        if self.process is not None:
            stop_process(self.process)
        self.process = None


@pytest.fixture
def redis_server():
    """A running private redis-server (skipped where redis-server is not installed)."""
    server = RedisServer()
    if server.binary is None:
        pytest.skip('redis-server is not installed (.ci/run installs it)')
    try:
        yield server.start()
    finally:
        server.stop()



@pytest.fixture
def redis_engines(redis_server):
    """``redis_engines(count, **engine_options) -> [(engine, received)]``: started Redis engines
    on the private redis-server, closed at teardown (also when a test closed them);
    ``received`` collects each ``(channel, data[, position])`` delivered."""
    from gsc.engines.redis import RedisEngine
    made = []

    def make(count=1, **engine_options):
        started = []
        for _ in range(count):
            engine = RedisEngine(redis_server.url, **engine_options)
            received = []
            ready = []
            engine.start(lambda *message, received=received: received.append(message),
                         lambda ready=ready: ready.append(True))
            made.append(engine)
            wait_until(lambda: ready)
            started.append((engine, received))
        return started
    yield make
    for engine in made:
        engine.close()


def engine_call(method, *args):
    """``(err, value)`` of an engine method that answers a callback."""
    answers = []
    method(*args, lambda *answer: answers.append(answer))
    wait_until(lambda: answers)
    return answers[0] if len(answers[0]) == 2 else (answers[0][0], None)

FAST_RECONNECT = {'initialDelay': 20, 'randomness': 0, 'multiplier': 1.5, 'maxDelay': 1000}


@pytest.fixture
def clients():
    """``clients(port, **options) -> gsc client`` with fast reconnects; all destroyed at teardown."""
    from gsc.client import create
    made = []

    def make(port, **options):
        options.setdefault('auto_reconnect_options', FAST_RECONNECT)
        client = create(port=port, **options)
        made.append(client)
        return client
    yield make
    for client in made:
        client.destroy()
