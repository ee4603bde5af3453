"""Hostile clients against one gsc worker: what each attack costs the worker and its good clients.

    .venv/bin/python bench/hostile.py                       # every attack, ~4 min
    .venv/bin/python bench/hostile.py --only fuzz,flood1b --fuzz-frames 20000

For each attack, a fresh worker (``bench/servers.py gsc``: one standalone gsc worker with the
``echo`` RPC, default limits) and 4 good clients (``bench/echo_clients.py``, their own process)
doing ``echo`` at a steady rate. Two windows on the same worker: a baseline (good clients only),
then the attack (the attacker runs in this process: raw bytes from bench/hostile_wire.py, every
phase bounded in count and under a gevent.Timeout). Reported per attack: the worker's RSS growth
(peak - before), the good clients' echo latency p50/p99/max, the worker's CPU % and CPU time per
attack frame (/proc/<pid>/stat), each beside the baseline window. Markdown table printed and
saved as bench/results/hostile-latest.md (+ .json); every process started is stopped by process
group at the end, also on error. 127.0.0.1 only.
"""

import argparse
import collections
import datetime
import json
import os
import random
import signal
import statistics
import sys
import time

import gevent
from gevent import socket

from cluster import Stack, Tree
from hostile_wire import ConnClosed, RawConn
from kit import OP_BINARY, OP_CONT, OP_PING, OP_PONG, client_frame, emit_frame, free_port, upgrade_request
from run_all import RESULTS, SERVERS, cpu_seconds, git, raise_nofile, wait_accepting

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ECHO_CLIENTS = os.path.join(HERE, 'echo_clients.py')
HOST = '127.0.0.1'
MiB = 1024 * 1024
SEND_CHUNK = 256 * 1024
RSS_EVERY = 0.05
WARMUP = 1.0
SETTLE = 1.5
READY_TIMEOUT = 20.0
ANSWER_TIMEOUT = 5.0
ECHO_TIMEOUT_MS = 5000.0  # echo_clients.ECHO_TIMEOUT: an unanswered echo counts as this long
FALLBACK_MAX_PAYLOAD = MiB
CPU_RESOLUTION = 0.02  # two clock ticks of /proc/<pid>/stat


def default_max_payload():
    """maxPayload of the checkout's gsc (its option registry), 1 MiB when it has none."""
    sys.path.append(ROOT)
    try:
        from gsc.core.options import SERVER, defaults
    except ImportError:
        return FALLBACK_MAX_PAYLOAD
    return defaults(SERVER).get('maxPayload') or FALLBACK_MAX_PAYLOAD


def rss_bytes(pid):
    """Resident memory of ``pid`` (0 once it has exited)."""
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_or_none(pid):
    """CPU seconds of ``pid``, None once it has exited."""
    try:
        return cpu_seconds(pid)
    except OSError:
        return None


def mib(n):
    """Bytes as a short MiB figure."""
    return '%.1f MiB' % (n / MiB)


# -- the attacks: each fills ``report`` as it goes (so a time cap keeps what was done) ---------

def open_conn(port, conns, reader=True, rcvbuf=None):
    """A handshaken RawConn (kept in ``conns`` to be closed at the end)."""
    conn = RawConn(port, rcvbuf=rcvbuf)
    conns.append(conn)
    conn.handshake()
    return conn.start_reader() if reader else conn


def send_chunks(conn, data, report):
    """Send ``data`` in SEND_CHUNK pieces, counting report['bytes_sent'], until the server
    closes; True when all of it was written."""
    view = memoryview(data)
    for offset in range(0, len(data), SEND_CHUNK):
        try:
            conn.send(view[offset:offset + SEND_CHUNK])
        except ConnClosed:
            return False
        report['bytes_sent'] = report.get('bytes_sent', 0) + len(view[offset:offset + SEND_CHUNK])
        gevent.sleep(0)  # let the reader see a close frame
    return True


def final_echo(conn, timeout):
    """Emit ``echo`` after the attack's frames: seconds until it was answered, None if never."""
    cid, started = conn.cid(), time.monotonic()
    try:
        conn.send(emit_frame('echo', 'after', cid))
    except ConnClosed:
        return None
    return time.monotonic() - started if conn.wait_answer(cid, timeout) else None


def closed_text(conn):
    """How the server ended ``conn``."""
    reason = (' %r' % conn.close_reason) if conn.close_reason else ''
    return 'closed %s%s' % (conn.close_code, reason)


def batch_payload(size, tail=b''):
    """``[{},{},...,tail]`` of about ``size`` bytes; (payload, packet count)."""
    count = max((size - 2 - len(tail)) // 3, 1)
    body = b'{},' * count
    body = body + tail if tail else body[:-1]
    return b'[' + body + b']', count + (1 if tail else 0)


def attack_batch_big(port, args, report, conns):
    """a. One batch text frame ``[{},{},...]`` of --batch-mib MiB."""
    conn = open_conn(port, conns)
    payload, packets = batch_payload(args.batch_mib * MiB)
    frame = client_frame(payload)
    report['frames'] = 1
    started = time.monotonic()
    send_chunks(conn, frame, report)
    answered = final_echo(conn, ANSWER_TIMEOUT) if conn.close_code is None else None
    if conn.close_code is not None:
        report['outcome'] = '%s after %s of %s sent (%.1f s)' % (
            closed_text(conn), mib(report.get('bytes_sent', 0)), mib(len(frame)), time.monotonic() - started)
    else:
        report['outcome'] = 'accepted %d packets; echo after it %s' % (
            packets, 'answered in %.1f s' % answered if answered is not None else 'unanswered')


def attack_batch_max(port, args, report, conns):
    """a. --batch-repeat batches just under maxPayload, each ending with an ``echo`` emit."""
    conn = open_conn(port, conns)
    answered = []
    for _ in range(args.batch_repeat):
        cid = conn.cid()
        payload, packets = batch_payload(args.batch_bytes, json.dumps(
            {'event': 'echo', 'data': 'end', 'cid': cid}).encode())
        started = time.monotonic()
        if not send_chunks(conn, client_frame(payload), report):
            break
        report['frames'] = report.get('frames', 0) + 1
        if not conn.wait_answer(cid, args.cap):
            break
        answered.append(time.monotonic() - started)
    what = '%d x %s batch (%d packets)' % (report.get('frames', 0), mib(len(payload)), packets)
    if len(answered) == args.batch_repeat:
        report['outcome'] = '%s: final echo answered after %s s' % (
            what, '/'.join('%.1f' % s for s in answered))
    else:
        report['outcome'] = '%s: %s after %d answered' % (what, closed_text(conn) if conn.close_code
                                                          else 'no answer', len(answered))


def attack_fragmented(port, args, report, conns):
    """b. One text message of --fragmented-mb MB in 64 KiB fragments, until the server closes."""
    conn = open_conn(port, conns)
    piece = b'0,' * (32 * 1024)
    frames = [client_frame(b'[' + piece, fin=False), client_frame(piece, OP_CONT, fin=False)]
    total = args.fragmented_mb * 1000 * 1000
    started = time.monotonic()
    report['frames'] = report['bytes_sent'] = 0
    while report['bytes_sent'] < total and conn.close_code is None:
        frame = frames[min(report['frames'], 1)]
        try:
            conn.send(frame)
        except ConnClosed:
            break
        report['frames'] += 1
        report['bytes_sent'] += len(frame)
        if report['frames'] % 16 == 0:
            gevent.sleep(0)
    if conn.close_code is None:
        try:
            conn.send(client_frame(b'0]', OP_CONT))
            report['frames'] += 1
        except ConnClosed:
            pass
        answered = final_echo(conn, ANSWER_TIMEOUT)
    elapsed = time.monotonic() - started
    if conn.close_code is not None:
        report['outcome'] = '%s after %s sent in %d fragments (%.1f s)' % (
            closed_text(conn), mib(report['bytes_sent']), report['frames'], elapsed)
    else:
        report['outcome'] = 'all %s accepted; echo after it %s' % (
            mib(report['bytes_sent']), 'answered in %.1f s' % answered if answered is not None else 'unanswered')


def flood(conn, make_burst, per_burst, count, report):
    """Send ``make_burst()`` (``per_burst`` frames) until ``count`` frames went out or the
    server closed."""
    report['frames'] = report.get('frames', 0)
    while report['frames'] < count and conn.close_code is None:
        try:
            conn.send(make_burst())
        except ConnClosed:
            break
        report['frames'] += per_burst
        gevent.sleep(0)


def attack_flood_tiny(port, args, report, conns):
    """c. --flood-frames text frames of one byte (``x``) from one socket, then an ``echo``."""
    conn = open_conn(port, conns)
    per_burst = 10000
    started = time.monotonic()
    burst = client_frame(b'x') * per_burst
    flood(conn, lambda: burst, per_burst, args.flood_frames, report)
    sent_at = time.monotonic()
    answered = final_echo(conn, args.cap) if conn.close_code is None else None
    if conn.close_code is not None:
        report['outcome'] = '%s after %d frames (%.1f s)' % (closed_text(conn), report['frames'],
                                                             time.monotonic() - started)
    else:
        report['outcome'] = 'sent in %.1f s; echo after them %s; %d messages came back in all' % (
            sent_at - started, 'answered in %.1f s' % answered if answered is not None else 'unanswered',
            conn.messages)


def attack_flood_valid(port, args, report, conns):
    """d. --valid-frames small ``echo`` emits from one socket, as fast as it can write."""
    conn = open_conn(port, conns)
    per_burst = 1000
    started = time.monotonic()
    report['frames'] = 0
    flood(conn, lambda: b''.join(emit_frame('echo', 1, conn.cid()) for _ in range(per_burst)),
          per_burst, args.valid_frames, report)
    sent_at = time.monotonic()
    with gevent.Timeout(args.cap, False):
        while len(conn.answers) < report['frames'] - 1 and conn.close_code is None:
            gevent.sleep(0.01)
    report['outcome'] = 'sent in %.1f s; %d of %d answered, the last %.1f s after the last send%s' % (
        sent_at - started, len(conn.answers) - 1, report['frames'], time.monotonic() - sent_at,
        '; ' + closed_text(conn) if conn.close_code is not None else '')


def attack_over_rate(port, args, report, conns):
    """h. small ``echo`` emits from one socket above its inbound rate limits
    (inboundMessagesPerSecond, default 10,000 a second) until the server closes it (4429
    after rateLimitGrace) or ``args.cap`` s pass."""
    conn = open_conn(port, conns)
    per_burst = 500
    started = time.monotonic()
    report['frames'] = 0
    with gevent.Timeout(args.cap, False):
        flood(conn, lambda: b''.join(emit_frame('echo', 1, conn.cid()) for _ in range(per_burst)),
              per_burst, args.valid_frames, report)
        while len(conn.answers) < report['frames'] - 1 and conn.close_code is None:
            gevent.sleep(0.01)
    answers = list(conn.answers.values())
    refused = sum(1 for packet in answers
                  if isinstance(packet.get('error'), dict) and packet['error'].get('name') == 'RateLimitError')
    report['outcome'] = '%d sent in %.1f s; %d answered, %d of them RateLimitError%s' % (
        report['frames'], time.monotonic() - started, len(answers), refused,
        '; ' + closed_text(conn) if conn.close_code is not None else '')


# -- e. fuzz -----------------------------------------------------------------------------------

def text(template, cid):
    """A text frame of ``template`` with ``%(cid)d`` filled in."""
    return client_frame((template % {'cid': cid}).encode())


BAD_JSON = ['{"event":', '{]', 'nul', '{"event":"echo","cid":', '[{},', '"unterminated', '\x00\x01',
            '{"event":"echo","data":1,"cid":%(cid)d}}']
WRONG_TYPES = ['{"event":5,"data":1,"cid":%(cid)d}', '{"event":"echo","cid":"x"}', '{"event":["a"],"cid":{}}',
               '[1,2,3]', 'null', '7', '"#2"', '{"rid":99999,"data":1}',
               '{"event":"#subscribe","data":5,"cid":%(cid)d}',
               '{"event":"#publish","data":{"channel":[1],"data":2},"cid":%(cid)d}',
               '{"event":"#unsubscribe","data":{"x":1},"cid":%(cid)d}',
               '{"event":"#authenticate","data":[1,2],"cid":%(cid)d}',
               '{"event":"#handshake","data":"x","cid":%(cid)d}', '{"event":"echo","data":1,"cid":-1}',
               '{"event":"echo","data":1,"cid":1e308}', '{"event":"echo","data":1,"cid":1.5}',
               '{"event":"#subscribe","data":{"channel":"c","data":{"a":[1,{}]}},"cid":%(cid)d}',
               '{"event":"#removeAuthToken","data":{},"cid":%(cid)d}']
DISCONNECTS = ['{"event":"#disconnect","data":{"code":"junk","data":[1,{"a":null}]}}',
               '{"event":"#disconnect","data":"junk"}', '{"event":"#disconnect","data":{"code":99999}}',
               '{"event":"#disconnect","data":{"code":1000.5,"data":"x"}}']
SURROGATES = ['{"event":"echo","data":"\\ud800x","cid":%(cid)d}', '{"event":"\\udfff","data":1,"cid":%(cid)d}',
              '{"event":"#subscribe","data":{"channel":"\\ud800"},"cid":%(cid)d}',
              '{"event":"#publish","data":{"channel":"a","data":"\\udc00"},"cid":%(cid)d}']
RESERVED_OPCODES = (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)


def fuzz_valid(rng, cid):
    return emit_frame('echo', rng.randrange(1000), cid)


def fuzz_long_channel(rng, cid):
    length = rng.choice((1025, 5000, 100000))
    event = rng.choice(('#subscribe', '#publish', '#unsubscribe'))
    return emit_frame(event, {'channel': 'c' * length, 'data': 1}, cid)


# (weight, kind, make(rng, cid) -> frame, the server should close the connection after it)
FUZZ_KINDS = [
    (30, 'valid echo', fuzz_valid, False),
    (10, 'bad JSON', lambda rng, cid: text(rng.choice(BAD_JSON), cid), False),
    (15, 'wrong types', lambda rng, cid: text(rng.choice(WRONG_TYPES), cid), False),
    (10, 'unknown event', lambda rng, cid: emit_frame('nope%d' % rng.randrange(100), 1, cid), False),
    (5, 'lone surrogate', lambda rng, cid: text(rng.choice(SURROGATES), cid), False),
    (2, 'long channel', fuzz_long_channel, False),
    (1, 'deep nesting', lambda rng, cid: client_frame(b'[' * 100000), False),
    (3, 'control and binary junk', lambda rng, cid: rng.choice((
        client_frame(b'junk', OP_PING), client_frame(b'junk', OP_PONG),
        client_frame(os.urandom(64), OP_BINARY))), False),
    (0.5, '#disconnect with junk', lambda rng, cid: text(rng.choice(DISCONNECTS), cid), True),
    (0.3, 'random RSV bits', lambda rng, cid: client_frame(b'{"event":"echo","data":1}', rsv=rng.randint(1, 7)), True),
    (0.3, 'reserved opcode', lambda rng, cid: client_frame(b'junk', rng.choice(RESERVED_OPCODES)), True),
    (0.2, 'invalid UTF-8', lambda rng, cid: client_frame(b'{"event":"echo","data":"\xed\xa0\x80"}'), True),
    (0.2, 'orphan continuation', lambda rng, cid: client_frame(b'junk', OP_CONT), True),
]
FUZZ_BURST = 20
FUZZ_CLOSE_WAIT = 2.0
FUZZ_MAX_CONNECT_FAILURES = 200


def fuzz_connection(port, rng, budget, report, conns, expected, ended_by):
    """One fuzzing client: a connection at a time, bursts of random frames; after a frame that
    should end the connection, wait for the server's close and connect again."""
    weights = [kind[0] for kind in FUZZ_KINDS]
    while budget[0] > 0:
        try:
            conn = open_conn(port, conns)
        except (ConnClosed, OSError):
            report['connect_failures'] += 1
            if report['connect_failures'] > FUZZ_MAX_CONNECT_FAILURES:
                return
            gevent.sleep(0.05)
            continue
        report['connections'] += 1
        fatal = None
        while budget[0] > 0 and fatal is None and conn.close_code is None:
            burst = []
            for _ in range(FUZZ_BURST):
                _, kind, make, closes = rng.choices(FUZZ_KINDS, weights)[0]
                cid = conn.cid()
                burst.append(make(rng, cid))
                report['kinds'][kind] += 1
                if kind == 'valid echo':
                    expected.append((conn, cid))
                if closes:
                    fatal = kind
                    break
            budget[0] -= len(burst)
            report['frames'] += len(burst)
            try:
                conn.send(b''.join(burst))
            except ConnClosed:
                break
            gevent.sleep(0)
        if fatal is not None:
            ended_by[conn] = fatal
            with gevent.Timeout(FUZZ_CLOSE_WAIT, False):
                while conn.close_code is None:
                    gevent.sleep(0.01)
            if conn.close_code is None:
                report['not_closed_after'][fatal] += 1
        report['closes'][str(conn.close_code) if conn.close_code is not None else 'open'] += 1
        if conn.close_code is None and budget[0] > 0:
            conn.close()


def attack_fuzz(port, args, report, conns):
    """e. --fuzz-frames frames of mixed hostile and valid content over --fuzz-conns connections;
    the share of valid ``echo`` emits (sent before any connection-ending frame) answered."""
    rng = random.Random(args.seed)
    budget = [args.fuzz_frames]
    expected, ended_by = [], {}
    report.update(frames=0, connections=0, connect_failures=0, kinds=collections.Counter(),
                  closes=collections.Counter(), not_closed_after=collections.Counter())
    started = time.monotonic()
    workers = [gevent.spawn(fuzz_connection, port, random.Random(rng.random()), budget, report, conns, expected,
                            ended_by) for _ in range(args.fuzz_conns)]
    try:
        gevent.joinall(workers, raise_error=True)
        with gevent.Timeout(ANSWER_TIMEOUT, False):
            while any(cid not in conn.answers and conn.close_code is None for conn, cid in expected):
                gevent.sleep(0.05)
    finally:
        gevent.killall(workers)
        answered = sum(1 for conn, cid in expected if cid in conn.answers)
        on_open = [cid in conn.answers for conn, cid in expected if conn.close_code is None]
        lost = collections.Counter(ended_by.get(conn, 'closed otherwise') for conn, cid in expected
                                   if cid not in conn.answers)
        report['valid_sent'], report['valid_answered'] = len(expected), answered
        report['outcome'] = ('%d frames over %d connections in %.1f s; valid echo answered %d of %d (%.1f %%; '
                             '%d of %d on connections still open at the end); '
                             'unanswered by what ended their connection: %s; '
                             'closes %s; fatal frames left open: %s; connect failures %d' % (
                                 report['frames'], report['connections'], time.monotonic() - started, answered,
                                 len(expected), 100.0 * answered / max(len(expected), 1), sum(on_open), len(on_open),
                                 dict(lost) or 'none',
                                 dict(report['closes']), dict(report['not_closed_after']) or 'none',
                                 report['connect_failures']))


# -- f. slow consumer --------------------------------------------------------------------------

def attack_slow_consumer(port, args, report, conns):
    """f. A subscriber (64 KiB receive buffer) that stops reading while a publisher pushes
    --push-mib MiB to its channel; then it reads everything and reports the close it sees."""
    consumer = open_conn(port, conns, reader=False, rcvbuf=64 * 1024)
    cid = consumer.cid()
    consumer.send(emit_frame('#subscribe', {'channel': 'slow'}, cid))
    with gevent.Timeout(ANSWER_TIMEOUT, ConnClosed('no #subscribe answer')):
        while cid not in consumer.answers:
            if not consumer._read_frame():
                raise ConnClosed('closed with %s during #subscribe' % consumer.close_code)
    publisher = open_conn(port, conns)
    message = 'x' * (args.push_kib * 1024)
    count = args.push_mib * 1024 // args.push_kib
    window = 8
    report['frames'] = 0
    try:
        for i in range(count):
            while len(publisher.answers) - 1 < i - window and publisher.close_code is None:
                gevent.sleep(0.001)
            publisher.send(emit_frame('#publish', {'channel': 'slow', 'data': message}, publisher.cid()))
            report['frames'] += 1
    except ConnClosed:
        report['publisher'] = closed_text(publisher)
    pushed = report['frames'] * len(message)
    got = consumer.drain(ANSWER_TIMEOUT)
    end = closed_text(consumer) if consumer.close_code is not None else 'still open'
    report['outcome'] = 'pushed %s; the consumer then read %s and saw: %s%s' % (
        mib(pushed), mib(got), end, '; publisher ' + report['publisher'] if 'publisher' in report else '')


# -- g. HTTP -----------------------------------------------------------------------------------

def first_line(data):
    """The status line of an HTTP answer, or what ended the connection."""
    return data.split(b'\r\n', 1)[0].decode('latin-1')[:40] if data else 'EOF'


def slow_header_client(port, args, report):
    """One connection sending a header line every --slow-every s for at most --slow-seconds."""
    started = time.monotonic()
    sock = socket.create_connection((HOST, port), timeout=ANSWER_TIMEOUT)
    try:
        sock.sendall(b'GET /socketcluster/ HTTP/1.1\r\nHost: 127.0.0.1\r\n')
        line = 0
        while time.monotonic() - started < args.slow_seconds:
            sock.settimeout(args.slow_every)
            try:
                data = sock.recv(4096)
            except socket.timeout:
                line += 1
                report['frames'] += 1
                try:
                    sock.sendall(b'X-Slow-%d: %d\r\n' % (line, line))
                except OSError:
                    report['ends']['reset'] += 1
                    report['closed_after'].append(time.monotonic() - started)
                    return
                continue
            except OSError:
                data = b'reset'
            report['ends'][first_line(data)] += 1
            report['closed_after'].append(time.monotonic() - started)
            return
        report['ends']['still open'] += 1
    finally:
        sock.close()


def attack_slow_headers(port, args, report, conns):
    """g. --http-conns connections that send their headers a line at a time."""
    report.update(frames=0, ends=collections.Counter(), closed_after=[])
    clients = [gevent.spawn(slow_header_client, port, args, report) for _ in range(args.http_conns)]
    try:
        gevent.joinall(clients, raise_error=True)
    finally:
        gevent.killall(clients)
        closed = report['closed_after']
        report['outcome'] = '%d connections, a header line every %s s for up to %s s: %s%s' % (
            args.http_conns, args.slow_every, args.slow_seconds, dict(report['ends']),
            '; closed after median %.1f s' % statistics.median(closed) if closed else '')


def big_header_client(port, args, report):
    """One upgrade request with --big-headers-kib KiB of 8 KiB header lines, then its answer."""
    sock = socket.create_connection((HOST, port), timeout=ANSWER_TIMEOUT)
    try:
        request = upgrade_request(port)[:-2]  # without the blank line that ends the headers
        filler = b'a' * 8180
        try:
            sock.sendall(request)
            for i in range(args.big_headers_kib // 8):
                sock.sendall(b'X-Big-%04d: %s\r\n' % (i, filler))
                report['frames'] += 1
                report['bytes_sent'] += 8192
            sock.sendall(b'\r\n')
            data = sock.recv(4096)
        except socket.timeout:
            data = b'no answer within %d s' % ANSWER_TIMEOUT
        except OSError:
            data = b'reset'
        report['ends'][first_line(data)] += 1
    finally:
        sock.close()


def attack_big_headers(port, args, report, conns):
    """g. --big-conns upgrade requests with --big-headers-kib KiB of headers each, at once."""
    report.update(frames=0, bytes_sent=0, ends=collections.Counter())
    clients = [gevent.spawn(big_header_client, port, args, report) for _ in range(args.big_conns)]
    try:
        gevent.joinall(clients, raise_error=True)
    finally:
        gevent.killall(clients)
        report['outcome'] = '%d connections x %d KiB of headers: %s sent; answers %s' % (
            args.big_conns, args.big_headers_kib, mib(report['bytes_sent']), dict(report['ends']))


# name -> (what it is, function, time cap in s, what its attack frames are)
ATTACKS = collections.OrderedDict([
    ('batch20m', ('a. one 20 MiB batch frame', attack_batch_big, 20, 'frames')),
    ('batchmax', ('a. batches just under maxPayload', attack_batch_max, 40, 'batch frames')),
    ('fragmented', ('b. 200 MB fragmented message', attack_fragmented, 30, '64 KiB fragments')),
    ('flood1b', ('c. 1-byte frame flood', attack_flood_tiny, 30, 'frames')),
    ('floodvalid', ('d. small valid event flood', attack_flood_valid, 30, 'emits')),
    ('overrate', ('h. over the rate limits', attack_over_rate, 30, 'emits')),
    ('fuzz', ('e. fuzz', attack_fuzz, 60, 'frames')),
    ('slowconsumer', ('f. slow consumer', attack_slow_consumer, 30, 'publishes')),
    ('slowheaders', ('g. slow HTTP headers', attack_slow_headers, 30, 'header lines')),
    ('bigheaders', ('g. big HTTP headers', attack_big_headers, 30, '8 KiB header lines')),
])


# -- measurement -------------------------------------------------------------------------------

class RssSampler:
    """The peak resident memory of ``pid``, sampled every RSS_EVERY s in a greenlet."""

    def __init__(self, pid):
        self.pid = pid
        self.before = self.peak = rss_bytes(pid)
        self.greenlet = gevent.spawn(self._sample)

    def _sample(self):
        while True:
            self.peak = max(self.peak, rss_bytes(self.pid))
            gevent.sleep(RSS_EVERY)

    def stop(self):
        """Stop sampling; the peak."""
        self.greenlet.kill()
        self.peak = max(self.peak, rss_bytes(self.pid))
        return self.peak


def measure(pid, work, cap, settle=0.0, at_least=0.0):
    """Run ``work(report)`` under a ``cap`` s timeout, in a window of at least ``at_least`` s (so
    that a quick attack's after-effects on the good clients are in it): the worker's CPU over
    the window, its RSS before and at the peak (sampled until ``settle`` s after), the report."""
    report = {}
    sampler = RssSampler(pid)
    t0, cpu0 = time.monotonic(), cpu_or_none(pid)
    timeout = gevent.Timeout(cap)
    timeout.start()
    try:
        work(report)
    except gevent.Timeout as exc:
        if exc is not timeout:
            raise
        report['capped'] = 'stopped at the %s s time cap' % cap
    except (ConnClosed, OSError) as exc:
        report['error'] = repr(exc)
    finally:
        timeout.close()
    gevent.sleep(max(0.0, t0 + at_least - time.monotonic()))
    t1, cpu1 = time.monotonic(), cpu_or_none(pid)
    gevent.sleep(settle)
    return {'t0': t0, 't1': t1, 'cpu_s': None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
            'rss_before': sampler.before, 'rss_peak': sampler.stop(), 'rss_after': rss_bytes(pid),
            'report': report}


def good_samples(lines, t0, t1):
    """Latencies (ms; an unanswered echo counts ECHO_TIMEOUT_MS), unanswered and closed counts of
    the good clients' output ``lines`` for echoes sent in [t0, t1)."""
    latencies, unanswered, closed = [], 0, 0
    for line in lines:
        fields = line.split()
        if len(fields) < 2 or not t0 <= float(fields[1]) < t1:
            continue
        if fields[0] == 'sample':
            latencies.append(float(fields[2]))
        elif fields[0] == 'timeout':
            latencies.append(ECHO_TIMEOUT_MS)
            unanswered += 1
        elif fields[0] == 'closed':
            closed += 1
    return {'n': len(latencies), 'unanswered': unanswered, 'closed': closed,
            'p50': percentile(latencies, 0.50), 'p99': percentile(latencies, 0.99),
            'max': max(latencies) if latencies else None}


def percentile(values, q):
    """The q-quantile (nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def wait_ready(tree):
    """Wait for the good clients' 'ready' line; RuntimeError if they exit or take too long."""
    with gevent.Timeout(READY_TIMEOUT, RuntimeError('good clients not ready within %s s' % READY_TIMEOUT)):
        while not any(text == 'ready' for _, text in list(tree.lines)):
            if tree.poll() is not None:
                raise RuntimeError('good clients exited with code %s: %s' % (tree.poll(), tree.output()[-500:]))
            gevent.sleep(0.05)


def log_problems(path):
    """Lines of a server log that report an error (ERROR or a traceback), and the first one."""
    count, first = 0, None
    with open(path, errors='replace') as f:
        for line in f:
            if 'ERROR' in line or 'Traceback' in line:
                count += 1
                first = first or line.strip()[:200]
    return count, first


def run_attack(name, args):
    """One attack on a fresh worker: the baseline window, then the attack window."""
    what, attack, cap, unit = ATTACKS[name]
    cap = args.cap or cap
    stack, conns = Stack(), []
    row = {'attack': name, 'what': what, 'unit': unit}
    log_path = os.path.join(RESULTS, 'hostile-%s.stderr.log' % name)
    try:
        port = free_port()
        server = stack.add(Tree([sys.executable, SERVERS, 'gsc', '--port', str(port)], log_path))
        wait_accepting(server.proc, port)
        lifetime = WARMUP + args.baseline + cap + 3 * SETTLE + 30
        good = stack.add(Tree([sys.executable, ECHO_CLIENTS, '--port', str(port), '--clients', str(args.clients),
                               '--rate', str(args.rate), '--seconds', str(lifetime)],
                              log_path.replace('.stderr.log', '-good.log')))
        wait_ready(good)
        gevent.sleep(WARMUP)
        row['base'] = measure(server.pid, lambda report: gevent.sleep(args.baseline), args.baseline + 5)
        row['att'] = measure(server.pid, lambda report: attack(port, args, report, conns), cap, SETTLE,
                             args.baseline)
        for conn in conns:
            conn.close()
        after = time.monotonic()
        gevent.sleep(SETTLE)
        row['server_alive'] = server.poll() is None
        good.stop()
        lines = [text for _, text in good.lines]
        row['good_base'] = good_samples(lines, row['base']['t0'], row['base']['t1'])
        row['good_att'] = good_samples(lines, row['att']['t0'], row['att']['t1'])
        row['good_after'] = good_samples(lines, after, after + SETTLE)
    except (RuntimeError, OSError, ConnClosed) as err:
        row['fatal'] = repr(err)
    finally:
        for conn in conns:
            conn.close()
        stack.stop()
    row['log_errors'], row['log_first_error'] = log_problems(log_path)
    row['log'] = os.path.relpath(log_path, ROOT)
    return row


# -- the table -----------------------------------------------------------------------------------

def ratio(a, b):
    """``a / b`` as '×1.23', '-' when either is missing or b is 0."""
    return '×%.2f' % (a / b) if a is not None and b else '-'


def num(value, digits=1):
    """A number for the table, '-' when missing."""
    return '-' if value is None else '{:,.{}f}'.format(value, digits)


def cpu_figures(row):
    """(attack CPU %, baseline CPU %, µs per attack frame beyond the baseline's rate, µs per good echo).

    Below CPU_RESOLUTION s of extra CPU the per-frame figure is an upper bound (a str '< N').
    """
    base, att = row['base'], row['att']
    base_s, att_s = base['t1'] - base['t0'], att['t1'] - att['t0']
    if base['cpu_s'] is None or att['cpu_s'] is None:
        return None, None, None, None
    frames = att['report'].get('frames') or 0
    extra = att['cpu_s'] - base['cpu_s'] / base_s * att_s
    if not frames:
        per_frame = None
    elif extra < CPU_RESOLUTION:
        per_frame = '< %s' % num(CPU_RESOLUTION / frames * 1e6)
    else:
        per_frame = extra / frames * 1e6
    echoes = row['good_base']['n']
    per_echo = base['cpu_s'] / echoes * 1e6 if echoes else None
    return 100 * att['cpu_s'] / att_s, 100 * base['cpu_s'] / base_s, per_frame, per_echo


def table_row(row):
    """One markdown row."""
    if 'fatal' in row:
        return '| %s | - | FAILED: %s | - | - | - | - | - | - | - |' % (row['what'], row['fatal'])
    att, base, ga, gb = row['att'], row['base'], row['good_att'], row['good_base']
    report = att['report']
    outcome = report.get('outcome') or report.get('error') or ''
    extras = [report[k] for k in ('capped', 'error') if k in report and report[k] != outcome]
    if not row['server_alive']:
        extras.append('WORKER DIED')
    elif not row['good_after']['n'] or row['good_after']['unanswered']:
        extras.append('good clients not answered after the attack')
    att_cpu, base_cpu, per_frame, per_echo = cpu_figures(row)
    grow_att = (att['rss_peak'] - att['rss_before']) / MiB
    grow_base = (base['rss_peak'] - base['rss_before']) / MiB
    cells = ('| %s | %s %s | %s | %s (%s) | %s / %s (%s) | %s / %s (%s) | %s / %s (%s) | %d / %d '
             '| %s / %s (%s) | %s (%s echo) |')
    return cells % (
        row['what'], '{:,}'.format(report.get('frames', 0)), row['unit'],
        '; '.join([outcome] + extras).replace('|', '/'),
        num(grow_att), num(grow_base),
        num(ga['p50']), num(gb['p50']), ratio(ga['p50'], gb['p50']),
        num(ga['p99']), num(gb['p99']), ratio(ga['p99'], gb['p99']),
        num(ga['max'], 0), num(gb['max'], 0), ratio(ga['max'], gb['max']),
        ga['unanswered'], ga['n'],
        num(att_cpu, 0), num(base_cpu, 0), ratio(att_cpu, base_cpu),
        per_frame if isinstance(per_frame, str) else num(per_frame, 1),
        '-' if isinstance(per_frame, str) else ratio(per_frame, per_echo))


def table(rows):
    """The markdown table of every attack."""
    out = ['| attack | sent | what happened | worker RSS growth MiB: attack (base) | good p50 ms: attack / base | '
           'good p99 ms: attack / base | good max ms: attack / base | good unanswered / echoes | '
           'worker CPU %: attack / base | worker CPU µs per attack frame (÷ per good echo) |',
           '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    out.extend(table_row(row) for row in rows)
    return '\n'.join(out)


def problems(rows):
    """Errors in the workers' logs, one line per attack."""
    return ['%s: %d error line(s) in %s, first: %s' % (row['attack'], row['log_errors'], row['log'],
                                                      row['log_first_error'])
            for row in rows if row['log_errors']]


# -- main ---------------------------------------------------------------------------------------

def parse_args():
    max_payload = default_max_payload()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', default=None, help='comma-separated attacks: %s (default: all)' % ','.join(ATTACKS))
    parser.add_argument('--baseline', type=float, default=3.0, help='seconds of the baseline window')
    parser.add_argument('--cap', type=float, default=None, help='time cap of every attack in s (default: per attack)')
    parser.add_argument('--clients', type=int, default=4, help='good clients')
    parser.add_argument('--rate', type=float, default=50.0, help='echo emits per second per good client')
    parser.add_argument('--batch-mib', type=int, default=20, help='a. size of the big batch frame')
    parser.add_argument('--batch-bytes', type=int, default=max_payload - 64,
                        help='a. size of the largest batch (default maxPayload - 64 = %d)' % (max_payload - 64))
    parser.add_argument('--batch-repeat', type=int, default=3, help='a. how many of the largest batches')
    parser.add_argument('--fragmented-mb', type=int, default=200, help='b. size of the fragmented message (MB)')
    parser.add_argument('--flood-frames', type=int, default=300000, help='c. 1-byte frames to send')
    parser.add_argument('--valid-frames', type=int, default=100000, help='d. echo emits to send')
    parser.add_argument('--fuzz-frames', type=int, default=100000, help='e. fuzz frames in all')
    parser.add_argument('--fuzz-conns', type=int, default=8, help='e. concurrent fuzzing connections')
    parser.add_argument('--seed', type=int, default=1, help='e. random seed of the fuzz')
    parser.add_argument('--push-mib', type=int, default=48, help='f. MiB published to the slow consumer')
    parser.add_argument('--push-kib', type=int, default=64, help='f. size of each publish (KiB)')
    parser.add_argument('--http-conns', type=int, default=100, help='g. slow-header connections')
    parser.add_argument('--slow-every', type=float, default=2.0, help='g. seconds between header lines')
    parser.add_argument('--slow-seconds', type=float, default=14.0, help='g. how long a slow client goes on')
    parser.add_argument('--big-conns', type=int, default=50, help='g. big-header connections')
    parser.add_argument('--big-headers-kib', type=int, default=1024, help='g. headers per big request (KiB)')
    args = parser.parse_args()
    args.attacks = list(ATTACKS) if args.only is None else [a.strip() for a in args.only.split(',') if a.strip()]
    unknown = [a for a in args.attacks if a not in ATTACKS]
    if unknown or not args.attacks:
        parser.error('unknown attack(s) %s; choose from %s' % (unknown, ', '.join(ATTACKS)))
    return args


def stop_on_sigterm():
    """SIGTERM ends the run through the ``finally`` blocks that stop every process."""
    def handler(signum, frame):
        raise SystemExit('SIGTERM')
    signal.signal(signal.SIGTERM, handler)


def main():
    args = parse_args()
    stop_on_sigterm()
    raise_nofile()
    os.makedirs(RESULTS, exist_ok=True)
    command = ' '.join([os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT) else sys.executable]
                       + sys.argv)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
    print('gsc hostile bench: %s; %s; load average %s' % (
        ','.join(args.attacks), git(['rev-parse', '--short', 'HEAD']), ' '.join('%.2f' % x for x in os.getloadavg())),
        flush=True)
    rows = []
    for name in args.attacks:
        began = time.monotonic()
        rows.append(run_attack(name, args))
        print('  %s (%.0f s): %s' % (name, time.monotonic() - began, rows[-1].get('fatal') or
                                     rows[-1]['att']['report'].get('outcome', '')), flush=True)
    dirty = ' (dirty)' if git(['status', '--short', '--', '../gsc']) else ''
    header = '`%s`\n\ngsc %s%s, %s, %d good clients x %s echo/s, baseline %s s per attack\n' % (
        command, git(['rev-parse', '--short', 'HEAD']), dirty,
        started, args.clients, args.rate, args.baseline)
    text = '%s\n%s\n' % (header, table(rows))
    found = problems(rows)
    if found:
        text += '\n' + '\n'.join('- ' + line for line in found) + '\n'
    print('\n' + text)
    with open(os.path.join(RESULTS, 'hostile-latest.md'), 'w') as f:
        f.write(text)
    with open(os.path.join(RESULTS, 'hostile-latest.json'), 'w') as f:
        json.dump({'command': command, 'started': started, 'git_head': git(['rev-parse', 'HEAD']),
                   'args': {k: v for k, v in vars(args).items()}, 'rows': rows}, f, indent=1, default=str)
    print('wrote %s' % os.path.relpath(os.path.join(RESULTS, 'hostile-latest.md')))


if __name__ == '__main__':
    main()
