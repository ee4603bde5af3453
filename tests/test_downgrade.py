"""downgradeToUser: workers and brokers switch to another user and keep serving."""

import json
import os
import pwd
import shutil
import tempfile

import pytest
from websockets.sync.client import connect

from master_harness import MasterProcess, free_port


def uid_of(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('Uid:'):
                return int(line.split()[1])
    return None


CONTROLLER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'controllers',
                          'pubsub_worker.py')
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason='switching users needs root')


def groups_of(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('Groups:'):
                return sorted(int(g) for g in line.split()[1:])
    return None


@pytest.fixture
def nobody():
    try:
        return pwd.getpwnam('nobody')
    except KeyError:
        pytest.skip('no user "nobody" on this machine')


@pytest.fixture
def controller_dir(request):
    """A directory of its own under the temp dir (wherever the checkout lives) holding a copy
    of the pub/sub worker controller; ``chmod`` it as the test needs."""
    path = tempfile.mkdtemp(prefix='gsc-downgrade-')
    request.addfinalizer(lambda: shutil.rmtree(path, ignore_errors=True))
    shutil.copy(CONTROLLER, path)
    return path


@needs_root
def test_children_run_as_the_user_and_serve(request, nobody, controller_dir):
    os.chmod(controller_dir, 0o755)
    port = free_port()
    master = MasterProcess({'workers': 1, 'brokers': 1, 'port': port, 'downgradeToUser': 'nobody',
                            'workerController': os.path.join(controller_dir, 'pubsub_worker.py')})
    request.addfinalizer(master.cleanup)
    master.ready(timeout=30)
    children = master.children()
    assert children and all(uid_of(pid) == nobody.pw_uid for pid in children)
    # initgroups: the children carry the user's groups, none of the master's (root's)
    expected = sorted(set(os.getgrouplist('nobody', nobody.pw_gid)))
    assert all(groups_of(pid) == expected for pid in children)
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


@needs_root
def test_a_controller_the_user_cannot_read_fails_the_start_at_once(request, nobody, controller_dir):
    os.chmod(controller_dir, 0o700)
    path = os.path.join(controller_dir, 'pubsub_worker.py')
    master = MasterProcess({'workers': 1, 'brokers': 1, 'port': free_port(),
                            'downgradeToUser': 'nobody', 'workerController': path})
    request.addfinalizer(master.cleanup)
    fail = master.expect('fail', timeout=10)
    assert fail['name'] == 'ControllerError' and fail['message'] == (
        "The workerController %r cannot be read by the user 'nobody' (downgradeToUser): "
        "no access to %s" % (path, controller_dir))
    master.proc.wait(10)  # the start ended: nothing was forked to wait for
