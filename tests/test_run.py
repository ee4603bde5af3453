"""``python run.py``: flags, SOCKETCLUSTER_* variables, and the sample served on a real port."""

import json
import os
import signal
import subprocess
import sys

import pytest
from websockets.sync.client import connect

from master_harness import ROOT, free_port, group_members

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def run_py(spawn):
    """``run_py(*args, env=...)`` -> a running ``python run.py`` in its own process group."""
    return lambda *args, env=None: spawn([sys.executable, 'run.py'] + list(args), env=env)


def wait_for_line(proc, text, limit=200):
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if text in line or len(lines) > limit:
            return lines
    return lines


def rpc(port, event, data):
    with connect('ws://127.0.0.1:%d/socketcluster/' % port, open_timeout=5) as ws:
        ws.send(json.dumps({'event': '#handshake', 'data': {}, 'cid': 1}))
        handshake = json.loads(ws.recv(5))
        ws.send(json.dumps({'event': event, 'data': data, 'cid': 2}))
        return handshake, json.loads(ws.recv(5))


def test_help_lists_flags_and_variables():
    out = subprocess.run([sys.executable, 'run.py', '--help'], cwd=ROOT, capture_output=True,
                         text=True, timeout=30).stdout
    for text in ('-w', '-b', '-p', '--wc', '--bc', '--wcc', '-n', 'SOCKETCLUSTER_PORT',
                 'SOCKETCLUSTER_WORKERS', 'SOCKETCLUSTER_BROKERS',
                 'SOCKETCLUSTER_WORKER_CONTROLLER', 'SOCKETCLUSTER_OPTIONS'):
        assert text in out


def test_flags_serve_the_protocol_and_sigterm_stops_everything(run_py):
    port = free_port()
    proc = run_py('-p', str(port), '-w', '2', '-b', '1')
    lines = wait_for_line(proc, 'Broker count')
    assert any('Worker count: 2' in line for line in lines)
    handshake, answer = rpc(port, 'echo', {'hello': 'world'})
    assert handshake['rid'] == 1 and handshake['data']['isAuthenticated'] is False
    assert answer == {'rid': 2, 'data': {'hello': 'world'}}
    assert len(group_members(proc.pid)) == 5
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(20) == 0
    assert group_members(proc.pid) == []


def test_environment_variables_and_json_options(run_py):
    port = free_port()
    proc = run_py(env={'SOCKETCLUSTER_PORT': str(port), 'SOCKETCLUSTER_WORKERS': '1',
                       'SOCKETCLUSTER_BROKERS': '2',
                       'SOCKETCLUSTER_OPTIONS': json.dumps({'path': '/custom/'})})
    lines = wait_for_line(proc, 'Broker count')
    assert any('Broker count: 2' in line for line in lines)
    assert any('Port: %d' % port in line for line in lines)
    with connect('ws://127.0.0.1:%d/custom/' % port, open_timeout=5) as ws:
        ws.send(json.dumps({'event': '#handshake', 'data': {}, 'cid': 1}))
        assert json.loads(ws.recv(5))['rid'] == 1


def test_bad_option_exits_with_1(run_py):
    proc = run_py(env={'SOCKETCLUSTER_OPTIONS': json.dumps({'brokers': '2'})})
    assert proc.wait(20) == 1
    assert 'The brokers option must be a number' in proc.stdout.read()
