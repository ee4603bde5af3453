"""Floods: a client that sends without reading never stalls the others, and is closed with
1013 once its unread answers pass the outbound bound (the outbound buffer is bounded)."""

import json
import sys
import time

from gevent import subprocess

from kit import start_process, stop_process

from conftest import handshake, recv_json

FLOODER = '''
import json, sys, time
from websockets.sync.client import connect
with connect("ws://127.0.0.1:%s/socketcluster/" % sys.argv[1]) as ws:
    ws.send('{"event":"#handshake","data":{},"cid":1}')
    ws.recv(5)
    batch = "[" + ",".join([json.dumps({"event": "echo", "data": "x" * 100, "cid": 2})] * 100) + "]"
    deadline = time.time() + float(sys.argv[2])
    try:
        while time.time() < deadline:
            ws.send(batch)
    except Exception as exc:
        print(json.dumps({"closed": ws.protocol.close_code}), flush=True)
'''


def test_a_flooding_client_is_closed_with_1013_and_others_are_served(make_server, raw):
    # a flooder shows signs of life: the server keeps its closing connection up to pingTimeout
    # no rate limits: this is about the outbound bound (the echo loop below passes 10,000 a second)
    server = make_server({'pingInterval': 60000, 'pingTimeout': 3000, 'inboundMessagesPerSecond': None})
    server.on('connection', lambda socket, status: socket.on('echo', lambda d, respond: respond(None, d)))
    warnings = []
    server.on('warning', warnings.append)
    flooder = start_process([sys.executable, '-c', FLOODER, str(server.port), '14'],
                            popen=subprocess.Popen, stdout=subprocess.PIPE, text=True)
    try:
        client = raw(server)
        handshake(client)
        answered_during_flood = 0
        deadline = time.time() + 8
        while flooder.poll() is None and time.time() < deadline:
            client.send(json.dumps({'event': 'echo', 'data': answered_during_flood, 'cid': 2}))
            assert recv_json(client, timeout=5) == {'rid': 2, 'data': answered_during_flood}
            answered_during_flood += 1
        output, _ = flooder.communicate(timeout=10)
    finally:
        stop_process(flooder)
    assert answered_during_flood > 10
    # the close frame says 1013; a peer too busy to read it in time sees the TCP close (1006)
    assert json.loads(output)['closed'] in (1013, 1006)
    assert any('Outbound buffer full' in str(w) for w in warnings)
