"""The command line as a user meets it: ``pip install .`` gives ``gsc``; ``gsc new DIR`` makes a
project that ``gsc`` (and ``python -m gsc``) serves from its directory; options are checked."""

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from master_harness import ROOT, free_port
from test_run import rpc, wait_for_line

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """gsc installed with pip (no dependencies: they are this venv's) into a target directory:
    ``(bin directory, environment)``."""
    target = tmp_path_factory.mktemp('site')
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',
                    '--no-build-isolation', '--target', str(target), ROOT],
                   check=True, capture_output=True, timeout=120)
    # the checkout must not be importable: only the installed copy
    env = {'PYTHONPATH': str(target), 'PYTHONSAFEPATH': '1'}
    return str(target / 'bin'), env


def http_get(port, path='/'):
    try:
        with urllib.request.urlopen('http://127.0.0.1:%d%s' % (port, path), timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_gsc_new_then_gsc_serves_the_project(installed, tmp_path, spawn):
    bin_dir, env = installed
    project = tmp_path / 'chat'
    made = subprocess.run([os.path.join(bin_dir, 'gsc'), 'new', str(project)], env=dict(
        os.environ, **env), cwd=str(tmp_path), capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made.stdout + made.stderr
    assert sorted(os.listdir(project / 'controllers')) == ['app.py', 'broker.py', 'worker.py']
    assert (project / 'requirements.txt').read_text().startswith('gsc')
    port = free_port()
    proc = spawn([os.path.join(bin_dir, 'gsc'), '-p', str(port)], cwd=str(project), env=env)
    lines = wait_for_line(proc, 'SocketCluster started')
    assert any('worker 0 is up' in line for line in lines), lines
    assert any('broker 0 is up' in line for line in lines), lines
    _, answer = rpc(port, 'echo', {'n': 1})
    assert answer == {'rid': 2, 'data': {'n': 1}}
    assert http_get(port) == (200, 'gsc is running: connect a socketcluster-client to '
                                   '/socketcluster/\n')


def test_gsc_new_refuses_a_directory_that_is_not_empty(installed, tmp_path):
    bin_dir, env = installed
    (tmp_path / 'keep.txt').write_text('mine')
    made = subprocess.run([os.path.join(bin_dir, 'gsc'), 'new', str(tmp_path)],
                          env=dict(os.environ, **env), capture_output=True, text=True, timeout=30)
    assert made.returncode == 1
    assert 'exists and is not empty' in made.stdout + made.stderr
    assert os.listdir(tmp_path) == ['keep.txt']


def test_python_m_gsc_names_only_what_is_asked(tmp_path, spawn):
    """A named controller runs alone: no sample broker controller, no sample WSGI app."""
    (tmp_path / 'controllers').mkdir()
    (tmp_path / 'controllers' / 'hello.py').write_text(
        'def run(worker):\n'
        '    worker.sc_server.on("connection", lambda s, st: s.on("hi", lambda d, r: r(None, "hi")))\n')
    (tmp_path / 'controllers' / 'broker.py').write_text(
        'def run(broker):\n    raise SystemExit("the broker controller must not run")\n')
    port = free_port()
    proc = spawn([sys.executable, '-m', 'gsc', '--wc', 'hello', '-p', str(port)],
                 cwd=str(tmp_path), env={'PYTHONPATH': ROOT})
    wait_for_line(proc, 'SocketCluster started')
    assert rpc(port, 'hi', None)[1] == {'rid': 2, 'data': 'hi'}
    assert http_get(port)[0] == 501


def test_python_client_snippet_runs_from_any_directory(installed, tmp_path, spawn):
    bin_dir, env = installed
    port = free_port()
    wait_for_line(spawn([sys.executable, 'run.py', '-p', str(port)]), 'SocketCluster started')
    snippet = ('from gsc.client import create\n'
               'socket = create(hostname="127.0.0.1", port=%d)\n'
               'socket.wait_for("connect")\n'
               'print(socket.invoke("roll", None)["roll"] in range(1, 7))\n' % port)
    done = subprocess.run([sys.executable, '-c', snippet], cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=30, env=dict(os.environ, **env))
    assert done.stdout.strip() == 'True', done.stderr


@pytest.mark.parametrize('args,env,message', [
    (['-w', '0'], {}, 'The workers option must be at least 1, not 0'),
    (['-b', '0'], {}, 'The brokers option must be at least 1, not 0'),
    (['-e', 'production'], {}, "The environment option must be 'dev' or 'prod', not 'production'"),
    ([], {'SOCKETCLUSTER_ENV': 'staging'}, "must be 'dev' or 'prod', not 'staging'"),
])
def test_bad_values_are_refused(spawn, args, env, message):
    proc = spawn([sys.executable, 'run.py'] + args + ['-p', str(free_port())], env=env)
    assert proc.wait(30) == 1
    assert message in proc.stdout.read()


def test_misspelt_option_is_named_and_environment_comes_from_its_variable(spawn):
    port = free_port()
    proc = spawn([sys.executable, 'run.py', '-p', str(port)], env={
        'SOCKETCLUSTER_ENV': 'prod', 'SOCKETCLUSTER_OPTIONS': json.dumps({'wrokers': 2})})
    lines = wait_for_line(proc, 'SocketCluster started')
    assert any("Unknown option 'wrokers' - did you mean 'workers'?" in line for line in lines)
    assert any('Environment: prod' in line for line in lines), lines


def test_one_cluster_per_port(spawn):
    port = free_port()
    wait_for_line(spawn([sys.executable, 'run.py', '-p', str(port)]), 'SocketCluster started')
    second = spawn([sys.executable, 'run.py', '-p', str(port)])
    assert second.wait(30) == 1
    assert 'Cannot listen on 0.0.0.0:%d - Address already in use' % port in second.stdout.read()
    assert rpc(port, 'roll', None)[1]['data']['roll'] in range(1, 7)


def test_a_port_another_program_serves_is_refused(spawn):
    with socket.socket() as other:
        other.bind(('127.0.0.1', 0))
        other.listen()
        port = other.getsockname()[1]
        proc = spawn([sys.executable, 'run.py', '-p', str(port)])
        assert proc.wait(30) == 1
        assert 'Address already in use' in proc.stdout.read()


@pytest.mark.parametrize('args,env,cause', [
    (['--wc', 'nosuch'], {}, 'the worker 0 exited with code 78 while starting'),
    (['--wc', 'worker', '--bc', 'nosuch'], {}, 'the broker 0 exited with code 78 while starting'),
    (['--wc', 'worker'], {'SOCKETCLUSTER_OPTIONS': json.dumps({'authPrivateKey': 'k'})},
     'the worker 0 exited with code 1 while starting'),
])
def test_a_start_that_cannot_work_exits_at_once(spawn, args, env, cause):
    proc = spawn([sys.executable, 'run.py', '-p', str(free_port())] + args, env=env)
    assert proc.wait(30) == 1
    output = proc.stdout.read()
    assert 'gsc could not start: %s - stopping' % cause in output
    assert 'SocketCluster started' not in output


def test_start_timeout(spawn, tmp_path):
    (tmp_path / 'controllers').mkdir()
    (tmp_path / 'controllers' / 'slow.py').write_text(
        'import time\n\ndef run(worker):\n    time.sleep(30)\n')
    proc = spawn([sys.executable, '-m', 'gsc', '--wc', 'slow', '-p', str(free_port())],
                 cwd=str(tmp_path), env={'PYTHONPATH': ROOT, 'SOCKETCLUSTER_OPTIONS': json.dumps(
                     {'startTimeout': 1000, 'processTermTimeout': 1000})})
    assert proc.wait(30) == 1
    assert ('gsc could not start: not every worker listened within startTimeout (1000 ms)'
            in proc.stdout.read())
