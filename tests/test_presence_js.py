"""Presence with the official socketcluster-client 14.3.2 under Node (tests/js/presence.js):
#join/#leave events, the #presence query, a reserved #gsc/ channel refused."""

import json
import os
import shutil

import pytest
from gevent import subprocess

JS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'js')
NODE = shutil.which('node')

pytestmark = pytest.mark.skipif(
    NODE is None or not os.path.isdir(os.path.join(JS_DIR, 'node_modules', 'socketcluster-client')),
    reason='needs node and `npm ci --prefix tests/js`')


def run_presence_script(server, timeout=8):
    """Run tests/js/presence.js against ``server``; its observations as ``{event: [args, ...]}``."""
    proc = subprocess.Popen([NODE, os.path.join(JS_DIR, 'presence.js'), str(server.port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PRESENCE_TIMEOUT=str(timeout)))
    try:
        out, err = proc.communicate(timeout=timeout + 1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    observed = {}
    for line in out.decode().splitlines():
        entry = json.loads(line)
        observed.setdefault(entry['event'], []).append(entry['args'])
    assert proc.returncode == 0, (observed, err.decode())
    return observed


def test_the_official_client_gets_join_leave_and_presence(make_server):
    server = make_server({'channelPresence': {'room/*': {}}})
    names = iter(['watcher', 'other'])
    server.on('connection', lambda socket, status: socket.set_auth_token({'username': next(names)}))
    observed = run_presence_script(server)
    [(err, answer, ids)] = observed['presence']
    assert err is None
    assert sorted(answer['members'], key=lambda m: m['user']) == [
        {'socketId': ids['other'], 'user': 'other'}, {'socketId': ids['watcher'], 'user': 'watcher'}]
    joins = [args[0] for args in observed['#join']]
    assert {'channel': 'room/1', 'socketId': ids['other'], 'user': 'other'} in joins
    assert observed['#leave'] == [[{'channel': 'room/1', 'socketId': ids['other'], 'user': 'other'}]]
    [[failure]] = observed['reservedSubscribeFail']
    assert 'reserved channel' in failure['message']
    assert 'error' not in observed or all('reserved' in e[0]['message'] for e in observed['error'])
