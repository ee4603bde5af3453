"""Memory given back after many connections closed (gsc.cluster.memory, )."""

import _abc
import abc
import collections.abc
import logging
import subprocess
import sys

import gevent
import pytest

from gsc.cluster import memory
from gsc.cluster import options as master_options
from gsc.errors import InvalidOptionsError, SocketProtocolError
from gsc.cluster.memory import MemoryReleaser, ReleasePolicy

from conftest import handshake, wait_until
from master_harness import ROOT

CONNECTIONS = 500


def test_policy_releases_once_a_large_drop_from_the_peak_stopped():
    policy = ReleasePolicy(drop=100)
    assert [policy.observe(count) for count in (50, 500, 450, 401)] == [False] * 4
    assert not policy.observe(400)  # 100 below the peak of 500, still falling
    assert policy.observe(400)
    assert not policy.observe(350)  # the peak starts again from 400
    assert not policy.observe(0)
    assert policy.observe(1)


def test_policy_needs_a_part_of_the_peak_too():
    policy = ReleasePolicy(drop=100)
    policy.observe(100000)
    assert not policy.observe(99000)
    assert not policy.observe(99000)  # 1% of the peak: a steady large worker
    assert not policy.observe(89000)
    assert policy.observe(89000)


def test_policy_off_with_no_drop():
    policy = ReleasePolicy(drop=None)
    policy.observe(1000)
    assert not policy.observe(0)
    assert not policy.observe(0)


@pytest.mark.parametrize('bad', [{'memoryReleaseDrop': 0}, {'memoryReleaseDrop': 1.5},
                                 {'memoryReleaseDrop': True}, {'memoryReleaseInterval': 10},
                                 {'memoryReleaseInterval': 'soon'}])
def test_bad_options_are_refused_at_start(bad):
    opts = master_options.merge(dict(bad, workerController='x'))
    with pytest.raises(InvalidOptionsError) as info:
        master_options.validate(opts)
    assert list(bad)[0] in str(info.value)


def test_release_runs_after_a_mass_close_and_the_server_still_serves(make_server, raw, caplog):
    server = make_server({'pingInterval': 60000, 'pingTimeout': 120000})
    releaser = MemoryReleaser(server, {'memoryReleaseDrop': CONNECTIONS // 2,
                                       'memoryReleaseInterval': 100}).start()
    caplog.set_level(logging.DEBUG, logger='gsc.cluster.memory')
    try:
        clients = [raw(server) for _ in range(CONNECTIONS)]
        for client in clients:
            assert handshake(client)['rid'] == 1
        wait_until(lambda: server.clients_count == CONNECTIONS, timeout=10)
        gevent.sleep(0.3)
        assert releaser.releases == 0
        for client in clients:
            client.close(1000)
        wait_until(lambda: releaser.releases == 1, timeout=10)
        assert server.clients_count + server.pending_clients_count <= CONNECTIONS // 2
        assert any('Memory released after closed connections' in record.getMessage()
                   for record in caplog.records)
        seconds, before, after = releaser.last_release
        assert 0 <= seconds < 5 and before > 0 and after > 0
        assert handshake(raw(server))['rid'] == 1
    finally:
        releaser.stop()


def test_release_memory_drops_the_names_the_type_cache_held():
    class Probe:
        pass
    name = ''.join(['per_connection_', 'name'])  # built at run time, like a connection's
    held = sys.getrefcount(name)
    getattr(Probe, name, None)
    assert sys.getrefcount(name) > held
    memory.release_memory()
    assert sys.getrefcount(name) == held


def test_prewarm_leaves_logging_no_abc_cache_to_fill_later():
    """logging checks ``isinstance(args[0], Mapping)``: once an ABC registration made the
    negative caches stale, the first warning logged rebuilds them (weak references allocated
    in the middle of a storm, where they pin memory), unless the worker pre-warmed them."""
    class Unrelated(abc.ABC):
        pass

    def negative_cache():
        dump = _abc._get_dump(collections.abc.Mapping)
        return {id(ref) for ref in dump[2]}, dump[3]

    probe = logging.getLogger('gsc.tests.prewarm')
    probe.propagate = False
    warning = SocketProtocolError('Socket hung up')
    Unrelated.register(type('Other', (), {}))
    assert negative_cache()[1] != abc.get_cache_token()
    probe.warning('%s', warning)
    assert negative_cache()[1] == abc.get_cache_token()  # rebuilt by the log call

    Unrelated.register(type('Another', (), {}))
    memory.prewarm_lazy_caches()
    before = negative_cache()
    assert before[1] == abc.get_cache_token()
    probe.warning('%s', warning)
    assert negative_cache() == before


PARK_BLOCKS = '''
import gc, sys
import gevent
from gevent import socket
from gsc.cluster import memory

def reader(sock):
    try:
        sock.recv(1)
    except Exception:
        pass

def wait(end):
    near, far = socket.socketpair()
    greenlet = gevent.spawn(reader, near)
    gevent.sleep(0)
    if end == 'throw':
        greenlet.kill(ValueError, block=True, timeout=5)
    else:
        far.sendall(b'x')
        greenlet.join(timeout=5)
    near.close()
    far.close()

wait('data')
if sys.argv[1] == 'prewarm':
    memory.prewarm_lazy_caches()
gc.collect()
blocks = sys.getallocatedblocks()
wait('throw')
gc.collect()
print(sys.getallocatedblocks() - blocks)
'''


def test_prewarm_makes_the_first_park_of_a_reader_allocate_nothing_lasting():
    """The first exception thrown into a greenlet waiting in ``recv`` (how an idle reader is
    parked) makes Cython cache its traceback's code objects for good: ~30 blocks that, at a
    storm's peak, pin 1 MiB arenas.  A fresh interpreter each, so that no earlier test warmed
    them."""
    def blocks_kept(mode):
        out = subprocess.run([sys.executable, '-c', PARK_BLOCKS, mode], cwd=ROOT, timeout=60,
                             capture_output=True, text=True, check=True)
        return int(out.stdout.split()[-1])

    assert blocks_kept('cold') >= 10
    assert blocks_kept('prewarm') <= 3
