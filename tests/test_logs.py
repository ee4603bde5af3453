"""What an operator reads: one line per event (ISO-8601 time, level, origin), tracebacks only for
user code, colour only on a terminal, routine client events quiet, process titles in ``ps``."""

import json
import os
import re
import select
import socket
import sys
import time
import urllib.request

import pytest

from kit import ROOT, client_frame, free_port, group_members, start_process, stop_process, upgrade
from test_run import rpc, wait_for_line

pytestmark = pytest.mark.timeout(60)
LINE = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) '
                  r'(master|workercluster|worker \d+|broker \d+) \(pid \d+\): \S')


def start(spawn, *args, env=None):
    port = free_port()
    proc = spawn([sys.executable, 'run.py', '-p', str(port)] + list(args), env=env)
    return proc, port, wait_for_line(proc, 'SocketCluster started')


def read_for(proc, seconds):
    """The lines ``proc`` prints within ``seconds``."""
    lines = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], max(deadline - time.monotonic(), 0))[0]:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
    return lines


def test_every_line_has_time_level_and_origin_and_the_banner_names_the_urls(spawn):
    proc, port, lines = start(spawn)
    assert lines and all(LINE.match(line) for line in lines), lines
    assert '\033[' not in ''.join(lines)  # not a terminal: no colour
    banner = lines[-1]
    assert 'http://127.0.0.1:%d/ and ws://127.0.0.1:%d/socketcluster/' % (port, port) in banner


def test_colour_on_a_terminal_unless_no_color(spawn):
    for env, coloured in (({}, True), ({'NO_COLOR': '1'}, False)):
        master_fd, slave_fd = os.openpty()
        proc = start_process([sys.executable, 'run.py', '-p', str(free_port())],
                             stdout=slave_fd, stderr=slave_fd, env=dict(os.environ, **env))
        os.close(slave_fd)
        try:
            output = b''
            deadline = time.monotonic() + 20
            while b'SocketCluster started' not in output and time.monotonic() < deadline:
                if select.select([master_fd], [], [], 1)[0]:
                    output += os.read(master_fd, 65536)
        finally:
            stop_process(proc)
            os.close(master_fd)
        assert b'SocketCluster started' in output
        assert (b'\033[' in output) is coloured


def test_two_hundred_clients_that_hang_up_make_a_handful_of_lines(spawn):
    proc, port, _ = start(spawn)
    for _ in range(200):
        sock = socket.create_connection(('127.0.0.1', port), timeout=5)
        upgrade(sock)
        sock.sendall(client_frame('{"event":"#handshake","cid":1}'))
        answer = b''
        while b'"rid":1' not in answer:
            answer += sock.recv(4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
        sock.close()  # a reset: the client hung up
    lines = read_for(proc, 2)
    assert len(lines) <= 5, lines
    assert not any('Traceback' in line for line in lines)


def test_a_controller_that_cannot_be_imported_is_one_line(spawn):
    proc = spawn([sys.executable, 'run.py', '-p', str(free_port()), '--wc', 'nosuch'])
    assert proc.wait(30) == 1
    output = proc.stdout.read()
    assert 'Traceback' not in output
    assert output.count("ControllerError: Failed to load workerController 'nosuch' - "
                        "ModuleNotFoundError: No module named 'nosuch'") == 1


def test_an_exception_of_user_code_shows_its_traceback_once(spawn, tmp_path):
    (tmp_path / 'controllers').mkdir()
    (tmp_path / 'controllers' / 'bad.py').write_text('x = 1\ny = undefined_name\n')
    proc = spawn([sys.executable, '-m', 'gsc', '--wc', 'bad', '-p', str(free_port())],
                 cwd=str(tmp_path), env={'PYTHONPATH': ROOT})
    assert proc.wait(30) == 1
    output = proc.stdout.read()
    assert output.count('Traceback') == 1
    assert 'bad.py", line 2, in <module>' in output


def test_log_level_1_prints_errors_only(spawn):
    port = free_port()
    proc = spawn([sys.executable, 'run.py', '-p', str(port), '--log-level', '1'])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            rpc(port, 'roll', None)
            break
        except OSError:
            time.sleep(0.1)
    lines = read_for(proc, 1)
    assert lines == []


def test_access_log(spawn):
    proc, port, _ = start(spawn, env={'SOCKETCLUSTER_OPTIONS': json.dumps({'accessLog': True})})
    with urllib.request.urlopen('http://127.0.0.1:%d/' % port, timeout=5) as answer:
        assert answer.status == 200
    lines = [line for line in read_for(proc, 1) if 'GET / HTTP/1.1' in line]
    assert len(lines) == 1 and ' 200 ' in lines[0] and LINE.match(lines[0]), lines


def test_process_titles(spawn):
    proc, _port, _ = start(spawn, '-n', 'titles', '-w', '2')
    titles = set()
    for pid in group_members(proc.pid):
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            titles.add(f.read().split(b'\0')[0].decode())
    assert titles == {'gsc master titles', 'gsc broker 0 titles', 'gsc workercluster titles',
                      'gsc worker 0 titles', 'gsc worker 1 titles'}
