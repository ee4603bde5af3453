"""downgradeToUser: workers and brokers switch to another user and keep serving (master-api.md §3)."""

import json
import os
import pwd

import pytest
from websockets.sync.client import connect

from master_harness import MasterProcess, free_port


def uid_of(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('Uid:'):
                return int(line.split()[1])
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason='switching users needs root')
def test_children_run_as_the_user_and_serve(request):
    try:
        nobody = pwd.getpwnam('nobody').pw_uid
    except KeyError:
        pytest.skip('no user "nobody" on this machine')
    port = free_port()
    master = MasterProcess({'workers': 1, 'brokers': 1, 'port': port, 'downgradeToUser': 'nobody',
                            'workerController': 'tests.controllers.pubsub_worker'})
    request.addfinalizer(master.cleanup)
    master.ready(timeout=30)
    children = master.children()
    assert children and all(uid_of(pid) == nobody for pid in children)
    assert uid_of(master.pid) == 0
    with connect('ws://127.0.0.1:%d/socketcluster/' % port, open_timeout=5) as ws:
        ws.send('{"event":"#handshake","data":{},"cid":1}')
        assert json.loads(ws.recv(5)) == {'event': 'worker', 'data': 0}
        assert json.loads(ws.recv(5))['rid'] == 1
        ws.send('{"event":"kv","data":{"method":"set","args":["k",1,true]},"cid":2}')
        assert json.loads(ws.recv(5)) == {'rid': 2, 'data': 1}
        ws.send('{"event":"#subscribe","data":{"channel":"x"},"cid":3}')
        assert json.loads(ws.recv(5)) == {'rid': 3}
        ws.send('{"event":"#publish","data":{"channel":"x","data":"hi"},"cid":4}')
        assert json.loads(ws.recv(5)) == {'event': '#publish', 'data': {'channel': 'x', 'data': 'hi'}}
