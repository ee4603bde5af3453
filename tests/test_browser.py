"""The sample chat in a real browser: headless Chromium (Debian's ``chromium``) driven by
playwright-core (tests/js/browser.js) against ``python run.py -w 2``: two pages on two
different workers log in, join a room (the late joiner sees the earlier messages from its
history, both see who is online), chat, send a private message and get an rpc ack; then one
page's worker is killed (kill -9) and that page recovers what was published meanwhile; a
broker kill -9 loses the room's history, and the page reloads the room."""

import json
import os
import shutil
import subprocess

import pytest

from kit import ROOT, free_port, group_members, start_process, stop_process
from test_run import run_py, wait_for_line  # noqa: F401 (run_py is a fixture)

CHROMIUM = '/usr/bin/chromium'
JS = os.path.join(ROOT, 'tests', 'js')
DRIVER_TIMEOUT = 90

pytestmark = [
    pytest.mark.timeout(150),
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason='%s is missing (apt-get install chromium; .ci/run does)' % CHROMIUM),
    pytest.mark.skipif(not os.path.isdir(os.path.join(JS, 'node_modules', 'playwright-core'))
                       or shutil.which('node') is None,
                       reason='playwright-core is missing (npm ci --prefix tests/js)'),
]


def run_driver(args, tmp_path, script='browser.js'):
    """Run ``node SCRIPT ARGS`` (a driver in tests/js) in its own session; its JSON lines.
    Chromium's profile goes under ``tmp_path`` (TMPDIR); the whole group is killed by id
    at the end."""
    proc = start_process(['node', script] + args, cwd=JS, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, TMPDIR=str(tmp_path), CHROMIUM=CHROMIUM,
                                  BROWSER_TIMEOUT=str(DRIVER_TIMEOUT - 10)))
    try:
        out, err = proc.communicate(timeout=DRIVER_TIMEOUT)
    finally:
        stop_process(proc)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith('{')]
    assert proc.returncode == 0, 'driver exited %s: %s\n%s' % (proc.returncode, lines[-5:], err[-2000:])
    return lines


def test_two_browsers_chat_across_workers(run_py, tmp_path):  # noqa: F811
    port = free_port()
    proc = run_py('-w', '2', '-p', str(port))
    lines = wait_for_line(proc, 'Broker count')
    assert any('Worker count: 2' in line for line in lines), lines
    screenshot = tmp_path / 'chat.png'
    events = run_driver(['http://127.0.0.1:%d/' % port, str(screenshot)], tmp_path)
    result = events[-1]
    assert result['event'] == 'result', events
    assert sorted(result['workers']) == ['0', '1']
    alice, bob = result['alice'], result['bob']
    assert (alice['user'], bob['user']) == ('alice', 'bob')
    room = ['[room/lobby] alice: one', '[room/lobby] alice: two',
            '[room/lobby] alice: hello from alice', '[room/lobby] bob: hi alice']
    after = ['[room/lobby] alice: while bob was away', '[room/lobby] http: from http',
             '[room/lobby] alice: welcome back']
    assert alice['messages'] == room + after
    assert bob['messages'] == room + ['[private/bob] alice: psst'] + after
    assert alice['online'] == bob['online'] == 'alice, bob'
    assert alice['ack'] in ['rpc ack: alice rolled %d' % n for n in range(1, 7)]
    assert alice['errors'] == bob['errors'] == ''
    assert bob['pid'] != result['killed'] and bob['pid'] > 0
    recovery = [r for r in bob['recoveries'] if r['channel'] == 'room/lobby']
    assert [(r['recovered'], r['missed']) for r in recovery] == [(True, 2)], bob['recoveries']
    assert not [e for e in events if e['event'] == 'pageerror']
    assert screenshot.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def broker_pid(master):
    """The pid of ``master``'s broker 0 (its process title is ``gsc broker 0``)."""
    for pid in group_members(master.pid):
        try:
            with open('/proc/%d/cmdline' % pid, 'rb') as f:
                title = f.read().replace(b'\0', b' ').strip()
        except OSError:
            continue
        if title.startswith(b'gsc broker 0'):
            return pid
    raise AssertionError('no broker 0 in the group of %d' % master.pid)


def test_the_page_reloads_the_room_when_its_history_is_lost(run_py, tmp_path):  # noqa: F811
    port = free_port()
    proc = run_py('-w', '1', '-p', str(port))
    wait_for_line(proc, 'Broker count')
    screenshot = tmp_path / 'reloaded.png'
    events = run_driver(['http://127.0.0.1:%d/' % port, str(screenshot), str(broker_pid(proc))],
                        tmp_path)
    alice, bob = events[-1]['alice'], events[-1]['bob']
    assert alice['messages'] == ['[room/lobby] http: before the restart',
                                 '[room/lobby] http: after the restart'], events
    assert bob['messages'] == ['[room/lobby] http: after the restart'], events
    recovery = [(r['recovered'], r['missed']) for r in bob['recoveries']
                if r['channel'] == 'room/lobby']
    assert recovery[0] == (False, 0) and recovery[-1] == (True, 1), bob['recoveries']
    assert bob['recovery'] == '1 message(s) from history'
    assert bob['online'] == '(anonymous), bob' and bob['errors'] == ''
    assert not [e for e in events if e['event'] == 'pageerror']
