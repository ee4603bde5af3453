"""Memory given back after many connections closed (gsc.cluster.memory, issue 10 item 3)."""

import sys
import logging

import gevent
import pytest

from gsc.cluster import memory
from gsc import options as master_options
from gsc.errors import InvalidOptionsError
from gsc.cluster.memory import MemoryReleaser, ReleasePolicy

from conftest import handshake, wait_until

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
