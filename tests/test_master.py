"""The master on real process trees: events, IPC with acks, supervision, signals.

Behaviour ids (B-, X-) are those listed in docs/behaviours-coverage.md.  Every test kills the
process group it started (tests/master_harness.py), also when it fails.
"""

import json
import os
import signal
import time

import pytest
from websockets.sync.client import connect

from master_harness import MasterProcess, free_port, group_members

pytestmark = [pytest.mark.timeout(90), pytest.mark.filterwarnings('ignore::DeprecationWarning')]

IPC = {'workers': 2, 'brokers': 2, 'ipcAckTimeout': 1000,
       'workerController': 'tests.controllers.ipc_worker',
       'brokerController': 'tests.controllers.ipc_broker'}


@pytest.fixture
def start_master(request):
    """``start_master(options)`` -> a running MasterProcess, killed at teardown."""
    started = []

    def start(options, env=None):
        master = MasterProcess(dict(options, port=options.get('port') or free_port()), env)
        started.append(master)
        return master

    def cleanup():
        for master in started:
            master.cleanup()
    request.addfinalizer(cleanup)
    return start


def ask(master, cmd, tag, **fields):
    master.send(cmd, tag=tag, **fields)
    return master.expect('callback', tag=tag)


def handshake(port, timeout=5):
    ws = connect('ws://127.0.0.1:%d/socketcluster/' % port, open_timeout=timeout, legacy=True)
    ws.send(json.dumps({'event': '#handshake', 'data': {}, 'cid': 1}))
    assert json.loads(ws.recv(timeout))['rid'] == 1
    return ws


def test_start_up_events_and_ipc_with_workers(start_master):
    """X-40 start-up events; B-017..B-028 master <-> worker IPC."""
    master = start_master(dict(IPC, sendOnRun=True, driverCommands=[
        {'cmd': 'send_to_worker', 'id': 0, 'data': {'id': 0, 'name': 'SocketCluster'},
         'tag': 'B-017'},
        {'cmd': 'send_to_worker', 'id': 1, 'data': {'id': 0, 'name': 'SocketCluster'},
         'tag': 'B-018'}]))
    for broker_id in (0, 1):
        master.expect('brokerStart', data={'id': broker_id, 'respawn': False})
    master.expect('workerClusterStart')
    starts = [master.expect('workerStart', data={'respawn': False}) for _ in range(2)]
    assert sorted(e['data']['id'] for e in starts) == [0, 1]
    assert all(e['data']['pid'] > 0 for e in starts)
    master.ready()
    master.expect('workerClusterReady')
    # B-017, B-018: sent before ready, buffered, answered.
    for tag in ('B-017', 'B-018'):
        answer = master.expect('callback', tag=tag)
        assert answer['err'] is None and answer['data'] == {'id': 1, 'name': 'TestName'}
    # B-024: a worker asks in run(); the master's workerMessage handler answers.
    asked = master.expect('workerMessage', data={'prop': 1234})
    assert asked['id'] in (0, 1)
    report = master.expect('workerMessage', data={'report': 'run'})
    assert report['data']['err'] is None and report['data']['data'] == {'qwerty': 123456}
    # B-019: unknown worker.
    answer = ask(master, 'send_to_worker', 'B-019', id=2, data={})
    assert answer['err']['name'] == 'InvalidActionError'
    assert answer['err']['message'] == ('Cannot send message to worker with id 2 because '
                                        'the worker does not exist')
    assert answer['data'] is None
    fail = master.expect('fail', name='InvalidActionError')
    assert fail['origin']['type'] == 'WorkerCluster'
    # B-020: the worker's error keeps its name, message and stack.
    answer = ask(master, 'send_to_worker', 'B-020', id=0, data={'fail': True})
    assert answer['err']['name'] == 'MyCustomWorkerError'
    assert answer['err']['message'] == 'This is an error from worker'
    assert 'ipc_worker.py' in answer['err']['stack']
    assert answer['data'] is None
    # B-022: no answer -> TimeoutError after ipcAckTimeout.
    started = time.monotonic()
    answer = ask(master, 'send_to_worker', 'B-022', id=0, data={'doNothing': True})
    assert answer['err']['name'] == 'TimeoutError'
    assert answer['err']['message'] == 'IPC response timed out'
    assert 0.8 < time.monotonic() - started < 3
    # B-021, B-023: without a callback nothing is reported.
    master.send('send_to_worker', id=0, data={'fail': True}, callback=False, tag='B-021')
    master.send('send_to_worker', id=0, data={'doNothing': True}, callback=False, tag='B-023')
    # B-025/B-026: the master never answers a worker.
    master.send('send_to_worker', id=1, data={'ask': {'doNothing': True}, 'callback': True,
                                              'tag': 'B-025'}, tag='ask-B-025')
    report = master.expect('workerMessage', data={'report': 'B-025'}, timeout=5)
    assert report['data']['err']['name'] == 'TimeoutError'
    assert report['data']['err']['message'] == 'IPC response timed out'
    # B-027/B-028: the master answers with its error.
    master.send('send_to_worker', id=1, data={'ask': {'fail': True}, 'callback': True,
                                              'tag': 'B-027'}, tag='ask-B-027')
    report = master.expect('workerMessage', data={'report': 'B-027'})
    assert report['data']['err']['name'] == 'MasterFailureError'
    assert report['data']['err']['message'] == 'Failure from master'
    master.send('send_to_worker', id=1, data={'ask': {'fail': True}, 'callback': False,
                                              'tag': 'B-028'}, tag='ask-B-028')
    later = master.collect(1.5)
    assert not [e for e in later if e.get('tag') in ('B-021', 'B-023')]
    assert not [e for e in later if e['event'] == 'fail']
    assert master.stop() == 0


def test_ipc_with_brokers_and_options_everywhere(start_master):
    """B-029..B-040 master <-> broker IPC; options (custom keys too) in every process."""
    master = start_master(dict(IPC, sendOnRun=True, myCustomKey={'a': [1, 2]},
                               driverCommands=[
        {'cmd': 'send_to_broker', 'id': 0, 'data': {'id': 0, 'name': 'SocketCluster'},
         'tag': 'B-029'},
        {'cmd': 'send_to_broker', 'id': 1, 'data': {'id': 0, 'name': 'SocketCluster'},
         'tag': 'B-030'},
        {'cmd': 'send_to_broker', 'id': 2, 'data': {}, 'tag': 'B-031'}]))
    # B-031: unknown broker, answered at once, fail from BrokerEngine.
    answer = master.expect('callback', tag='B-031')
    assert answer['err']['name'] == 'BrokerError'
    assert answer['err']['message'] == 'Broker with id 2 does not exist'
    assert master.expect('fail', name='BrokerError')['origin']['type'] == 'BrokerEngine'
    for tag in ('B-029', 'B-030'):
        answer = master.expect('callback', tag=tag)
        assert answer['err'] is None and answer['data'] == {'id': 1, 'name': 'TestName'}
    # B-036: a broker asks from run(); B-040: brokers talk to the master before workers start.
    report = master.expect('brokerMessage', data={'report': 'run'})
    assert report['data']['data'] == {'qwerty': 123456}
    master.ready()
    answer = ask(master, 'send_to_broker', 'B-032', id=0, data={'fail': True})
    assert answer['err']['name'] == 'MyCustomBrokerError'
    assert answer['err']['message'] == 'This is an error from broker'
    assert answer['data'] is None
    answer = ask(master, 'send_to_broker', 'B-034', id=1, data={'doNothing': True})
    assert answer['err']['name'] == 'TimeoutError'
    master.send('send_to_broker', id=0, data={'doNothing': True}, callback=False, tag='B-035')
    master.send('send_to_broker', id=0, data={'fail': True}, callback=False, tag='B-033')
    master.send('send_to_broker', id=0, data={'ask': {'doNothing': True}, 'callback': True,
                                              'tag': 'B-037'}, tag='ask-B-037')
    report = master.expect('brokerMessage', data={'report': 'B-037'}, timeout=5)
    assert report['data']['err']['message'] == 'IPC response timed out'
    master.send('send_to_broker', id=0, data={'ask': {'fail': True}, 'callback': True,
                                              'tag': 'B-038'}, tag='ask-B-038')
    report = master.expect('brokerMessage', data={'report': 'B-038'})
    assert report['data']['err']['name'] == 'MasterFailureError'
    later = master.collect(1.5)
    assert not [e for e in later if e.get('tag') in ('B-033', 'B-035')]
    # Options: the same in the master, the workers and the brokers, custom keys included.
    keys = ['myCustomKey', 'ipcAckTimeout', 'workers', 'instanceId', 'secretKey', 'authKey']
    from_worker = ask(master, 'send_to_worker', 'opt-w', id=1, data={'options': keys})['data']
    from_broker = ask(master, 'send_to_broker', 'opt-b', id=1, data={'options': keys})['data']
    assert from_worker == from_broker
    assert from_worker['myCustomKey'] == {'a': [1, 2]} and from_worker['ipcAckTimeout'] == 1000
    assert len(from_worker['secretKey']) == 64 and len(from_worker['instanceId']) == 36
    who = ask(master, 'send_to_broker', 'who', id=1, data={'whoami': True})['data']
    assert who['id'] == 1 and who['instanceId'] == from_worker['instanceId']
    status = ask(master, 'send_to_worker', 'status', id=0, data={'status': True})['data']
    assert set(status) == {'clientCount', 'httpRPM', 'wsRPM'}
    assert master.stop() == 0


def test_worker_error_warning_and_kill_workers_brokers_destroy(start_master):
    """X-40: worker error -> fail + exit 1 + respawn; warning; kill_workers; kill_brokers;
    destroy."""
    master = start_master(IPC)
    master.ready()
    ask(master, 'send_to_worker', 'err', id=1, data={'emitError': True})
    fail = master.expect('fail', name='WorkerTestError')
    assert fail['origin']['type'] == 'Worker' and fail['origin']['id'] == 1
    assert master.expect('workerExit', data={'id': 1, 'code': 1})['data']['signal'] is None
    assert master.expect('workerStart', data={'id': 1, 'respawn': True})['data']['pid'] \
        != fail['origin']['pid']
    ask(master, 'send_to_worker', 'warn', id=0, data={'emitWarning': True})
    warning = master.expect('warning', name='WorkerTestWarning')
    assert warning['origin'] == {'type': 'Worker', 'pid': warning['origin']['pid'], 'id': 0}
    master.send('kill_workers')
    exits = [master.expect('workerExit', data={'code': 0}) for _ in range(2)]
    assert sorted(e['data']['id'] for e in exits) == [0, 1]
    for _ in range(2):
        master.expect('workerStart', data={'respawn': True})
    master.send('kill_brokers')
    for _ in range(2):
        fail = master.expect('fail', name='ProcessExitError')
        assert fail['origin']['type'] == 'BrokerEngine' and fail['code'] == 0
        assert fail['message'].startswith('Broker server at socket path ')
    starts = [master.expect('brokerStart', data={'respawn': True}) for _ in range(2)]
    assert sorted(e['data']['id'] for e in starts) == [0, 1]
    master.send('destroy')
    master.expect('destroyed')
    exits = [e for e in master.events if e['event'] in ('brokerExit', 'workerClusterExit')]
    assert [e for e in exits if e['event'] == 'workerClusterExit'][-1]['data']['code'] == 0
    assert master.proc.wait(10) == 0
    assert group_members(master.pgid) == []


def test_uncaught_exception_without_crash(start_master):
    """X-42: crashWorkerOnError false: an uncaught exception is reported, the worker lives."""
    master = start_master(dict(IPC, crashWorkerOnError=False, brokers=1))
    master.ready()
    ask(master, 'send_to_worker', 'boom', id=0, data={'uncaught': True})
    fail = master.expect('fail', name='ZeroDivisionError')
    assert fail['origin']['type'] == 'Worker'
    later = master.collect(1.5)
    assert not [e for e in later if e['event'] == 'workerExit']
    assert ask(master, 'send_to_worker', 'alive', id=0, data={})['err'] is None


def test_kill9_worker_under_load_clients_reconnect(start_master):
    """A worker killed with SIGKILL is reported and respawned; its clients reconnect."""
    master = start_master(dict(IPC, brokers=1))
    master.ready()
    options_port = ask(master, 'send_to_worker', 'port', id=0,
                       data={'options': ['port']})['data']['port']
    victim = ask(master, 'send_to_worker', 'who', id=0, data={'whoami': True})['data']['pid']
    sockets = [handshake(options_port) for _ in range(12)]
    os.kill(victim, signal.SIGKILL)
    exit_event = master.expect('workerExit', data={'id': 0, 'signal': 'SIGKILL'})
    assert exit_event['data']['pid'] == victim and exit_event['data']['code'] is None
    start = master.expect('workerStart', data={'id': 0, 'respawn': True})
    assert start['data']['pid'] != victim
    for ws in sockets:
        ws.close()
    for _ in range(12):
        ws = handshake(options_port)
        ws.send(json.dumps({'event': 'whoami', 'cid': 2}))
        assert json.loads(ws.recv(5))['data'] != victim
        ws.close()


def test_kill9_broker_is_respawned(start_master):
    """A broker killed with SIGKILL: brokerExit with the signal, then brokerStart respawn."""
    master = start_master(dict(IPC, brokers=1, workers=1))
    master.ready()
    pid = ask(master, 'send_to_broker', 'who', id=0, data={'whoami': True})['data']['pid']
    os.kill(pid, signal.SIGKILL)
    assert master.expect('brokerExit', data={'id': 0, 'signal': 'SIGKILL'})['data']['pid'] == pid
    assert master.expect('brokerStart', data={'id': 0, 'respawn': True})['data']['pid'] != pid
    assert ask(master, 'send_to_broker', 'again', id=0, data={})['err'] is None


@pytest.mark.parametrize('environment,how', [('dev', 'immediately'),
                                             ('prod', 'gracefully within processTermTimeout '
                                                      'limit')])
def test_sigusr2_reboots_workers(start_master, environment, how):
    """X-43: SIGUSR2 -> warning, workers exit with code 0 and are respawned."""
    master = start_master(dict(IPC, brokers=1, environment=environment))
    master.ready()
    os.kill(master.pid, signal.SIGUSR2)
    warning = master.expect('warning', name='ProcessExitError')
    assert warning['message'] == 'Master received SIGUSR2 signal - Shutting down all workers ' \
        + how
    assert warning['signal'] == 'SIGUSR2'
    for _ in range(2):
        master.expect('workerExit', data={'code': 0})
    for _ in range(2):
        master.expect('workerStart', data={'respawn': True})


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_the_tree_down(start_master, signum):
    """SIGTERM / SIGINT: every process of the tree exits, the master with code 0."""
    master = start_master(IPC)
    master.ready()
    assert len(master.children()) == 5
    os.kill(master.pid, signum)
    assert master.proc.wait(20) == 0
    deadline = time.monotonic() + 5
    while group_members(master.pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert group_members(master.pgid) == []


def test_hung_worker_does_not_block_shutdown(start_master):
    """A worker that ignores SIGTERM and blocks while closing is killed within the limits."""
    master = start_master(dict(IPC, brokers=1, processTermTimeout=1000))
    master.ready()
    ask(master, 'send_to_worker', 'hang', id=0, data={'hangOnTerm': True})
    started = time.monotonic()
    os.kill(master.pid, signal.SIGTERM)
    assert master.proc.wait(20) == 0
    assert time.monotonic() - started < 8
    time.sleep(0.5)
    assert group_members(master.pgid) == []


def test_garbage_and_flood_from_a_worker(start_master):
    """A worker that floods its link or writes garbage never takes the master down."""
    master = start_master(dict(IPC, brokers=1))
    master.ready()
    assert ask(master, 'send_to_worker', 'flood', id=1, data={'flood': 5000})['data'] == 'flooded'
    assert ask(master, 'send_to_worker', 'after-flood', id=0, data={})['err'] is None
    ask(master, 'send_to_worker', 'garbage', id=1, data={'garbage': True})
    master.expect('workerExit', data={'id': 1})
    master.expect('workerStart', data={'id': 1, 'respawn': True})
    assert ask(master, 'send_to_worker', 'after', id=1, data={})['err'] is None


def test_controller_that_fails_at_import(start_master):
    """A broken worker controller: one fail naming it and the import error, no respawn loop."""
    master = start_master(dict(IPC, workers=1, brokers=1,
                               workerController='tests.controllers.broken_import'))
    fail = master.expect('fail', name='ControllerError')
    assert "tests.controllers.broken_import" in fail['message']
    assert 'this_module_does_not_exist' in fail['message']
    assert master.expect('workerExit', data={'id': 0})['data']['code'] == 78
    # the start fails: the tree is stopped, nothing is respawned, the master ends
    assert master.proc.wait(15) is not None
    assert not [e for e in master.events if e['event'] == 'workerStart']


def test_controller_without_run(start_master):
    """A controller with no run() is reported by name."""
    master = start_master(dict(IPC, workers=1, brokers=1,
                               brokerController='tests.controllers.no_run'))
    fail = master.expect('fail', name='ControllerError')
    assert "brokerController 'tests.controllers.no_run' has no run(broker)" in fail['message']
    master.expect('brokerExit', data={'code': 78})
    assert master.proc.wait(15) is not None
    assert not [e for e in master.events if e['event'] == 'brokerStart']


def test_hot_reboot_in_dev(start_master, tmp_path):
    """environment 'dev': a change in controllers/ reboots the workers."""
    (tmp_path / 'controllers').mkdir()
    controller = tmp_path / 'controllers' / 'hot.py'
    controller.write_text('def run(worker):\n    pass\n')
    master = start_master({'workers': 1, 'brokers': 1, 'workerController': 'hot',
                           'paths': {'appDirPath': str(tmp_path)}})
    master.ready()
    time.sleep(1.2)
    controller.write_text('def run(worker):\n    worker.changed = True\n')
    master.expect('workerExit', data={'id': 0, 'code': 0})
    master.expect('workerStart', data={'id': 0, 'respawn': True})


def self_signed():
    """A PEM (key, cert) pair for 127.0.0.1."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, '127.0.0.1')])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


def test_https_workers(start_master):
    """protocol 'https' with protocolOptions key/cert (PEM text): the workers serve wss://."""
    import ssl
    key, cert = self_signed()
    port = free_port()
    master = start_master(dict(IPC, workers=1, brokers=1, port=port, protocol='https',
                               protocolOptions={'key': key, 'cert': cert}))
    master.ready()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with connect('wss://127.0.0.1:%d/socketcluster/' % port, ssl=context, open_timeout=5) as ws:
        ws.send(json.dumps({'event': '#handshake', 'data': {}, 'cid': 1}))
        assert json.loads(ws.recv(5))['rid'] == 1
