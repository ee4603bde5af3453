"""Supervision options of the master on real process trees:
workerStatusInterval and get_status, killWorkerMemoryThreshold, forceKillTimeout/forceKillSignal,
killMasterOnSignal, workerClusterController."""

import json
import os
import signal
import time

from websockets.sync.client import connect

from master_harness import free_port, group_members
from test_master import IPC, ask, start_master  # noqa: F401 (start_master is a fixture)


def test_get_status_counts_clients_and_requests(start_master):  # noqa: F811
    """worker.get_status(): clientCount, and wsRPM over the last workerStatusInterval."""
    port = free_port()
    master = start_master(dict(IPC, port=port, workers=1, brokers=1, workerStatusInterval=500))
    master.ready()
    with connect('ws://127.0.0.1:%d/socketcluster/' % port, open_timeout=5) as ws:
        ws.send('{"event":"#handshake","data":{},"cid":1}')
        json.loads(ws.recv(5))
        deadline = time.monotonic() + 1.3  # traffic through more than two whole intervals
        cid = 1
        while time.monotonic() < deadline:
            cid += 1
            ws.send(json.dumps({'event': 'whoami', 'cid': cid}))
            json.loads(ws.recv(5))
            time.sleep(0.02)
        status = ask(master, 'send_to_worker', 'status', id=0, data={'status': True})['data']
    assert status['clientCount'] == 1
    assert status['wsRPM'] >= 5 * 60 / 0.5  # at least 5 messages in the last 0.5 s interval
    assert status['httpRPM'] == 0


def test_memory_threshold_restarts_the_worker(start_master):  # noqa: F811
    """killWorkerMemoryThreshold: the worker warns ResourceLimitError, exits 0 and is respawned."""
    master = start_master(dict(IPC, workers=1, brokers=1, workerStatusInterval=200,
                               killWorkerMemoryThreshold=1000))
    master.ready()
    warning = master.expect('warning', timeout=10, name='ResourceLimitError')
    assert 'exceeded the killWorkerMemoryThreshold of 1000' in warning['message']
    assert master.expect('workerExit', timeout=10)['data']['code'] == 0
    assert master.expect('workerStart', timeout=10, data={'respawn': True})


def test_force_kill_timeout_kills_a_stuck_worker_during_a_reboot(start_master):  # noqa: F811
    """kill_workers() gives workers forceKillTimeout to exit, then sends forceKillSignal."""
    master = start_master(dict(IPC, workers=1, brokers=1, processTermTimeout=20000,
                               forceKillTimeout=500, forceKillSignal='SIGKILL'))
    master.ready()
    ask(master, 'send_to_worker', 'hang', id=0, data={'hangOnTerm': True})
    started = time.monotonic()
    master.send('kill_workers')
    fail = master.expect('fail', timeout=10, name='ProcessExitError')
    assert 'before forceKillTimeout of 500 ms was reached' in fail['message']
    assert 'kill signal SIGKILL was sent' in fail['message']
    assert master.expect('workerExit', timeout=10)['data']['signal'] == 'SIGKILL'
    assert time.monotonic() - started < 10
    assert master.expect('workerStart', timeout=10, data={'respawn': True})


def test_kill_master_on_signal_ends_the_tree_after_sigusr2(start_master):  # noqa: F811
    master = start_master(dict(IPC, workers=1, brokers=1, killMasterOnSignal=True))
    master.ready()
    os.kill(master.pid, signal.SIGUSR2)
    assert master.proc.wait(20) == 0
    deadline = time.monotonic() + 5
    while group_members(master.pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert group_members(master.pgid) == []


def test_worker_cluster_controller_runs_in_the_worker_cluster(start_master):  # noqa: F811
    master = start_master(dict(IPC, workers=2, brokers=1,
                               workerClusterController='tests.controllers.cluster_controller'))
    master.ready()
    warning = master.expect('warning', timeout=10, name='ClusterControllerRan')
    assert warning['message'] == 'worker cluster controller ran with 2 workers'
    assert warning['origin']['type'] == 'WorkerCluster'
