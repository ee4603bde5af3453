#!/usr/bin/env node
// The clients of the recovery scenario (bench/recovery.py): subscribers and publishers on one
// channel, speaking the raw SocketCluster protocol over `ws` (bench/loadgen's), that reconnect
// and resubscribe after they lose their connection.
//
//   node bench/recovery_clients.js --url ws://127.0.0.1:P/socketcluster/ [--subs 200] [--pubs 10]
//        [--rate 20] [--retry-ms 10] [--retry-max-ms 100] [--window 10] [--cap 600]
//
// Every publish carries its CLOCK_MONOTONIC time (process.hrtime, the clock of Python's
// time.monotonic_ns). Commands on stdin, one per line:
//   kill LABEL T_NS   the bench killed a process at monotonic time T_NS: for each subscriber, wait
//                     (at most --window s) for its first delivery of a message published after
//                     T_NS, then print one JSON line: {"type": "kill", "label", "max_ms", ...}
//   stop              print totals and exit
// Stdout is JSON lines: {"type": "ready"} once every subscriber has subscribed and received,
// one line per kill, {"type": "done"} at the end. 127.0.0.1 only; every loop is bounded
// (reconnects back off to --retry-max-ms; a hard cap ends the process).
'use strict';
const path = require('path');
const readline = require('readline');
const WebSocket = require(path.join(__dirname, 'loadgen', 'node_modules', 'ws'));

function parseArgs(argv) {
  const a = { url: null, subs: 200, pubs: 10, rate: 20, retryMs: 10, retryMaxMs: 100, window: 10,
    cap: 600, channel: 'recovery', readyTimeout: 30 };
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(key in a)) throw new Error('unknown option ' + argv[i]);
    a[key] = typeof a[key] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!a.url || !/^ws:\/\/127\.\d+\.\d+\.\d+:\d+\//.test(a.url)) {
    throw new Error('--url ws://127.x.x.x:PORT/... required');
  }
  return a;
}
const A = parseArgs(process.argv);
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const totals = { connects: 0, connect_failures: 0, disconnects: 0, deliveries: 0, published: 0,
  publish_acks: 0, publish_errors: 0, subscribe_errors: 0 };

// One SocketCluster connection that reconnects (and resubscribes) whenever it is lost.
class Client {
  constructor(index, subscriber) {
    this.index = index; this.subscriber = subscriber; this.cid = 0; this.pending = new Map();
    this.ws = null; this.ready = false; this.received = false; this.delay = A.retryMs; this.stopped = false;
    this.firstAfter = null; // monotonic ms of the first delivery published after the current kill
    this.connect();
  }
  connect() {
    const ws = this.ws = new WebSocket(A.url, { perMessageDeflate: false, handshakeTimeout: 5000 });
    ws.on('open', () => this.emit('#handshake', {}, (err) => {
      if (err) return ws.terminate();
      totals.connects++; this.delay = A.retryMs;
      if (!this.subscriber) { this.ready = true; return; }
      this.emit('#subscribe', { channel: A.channel }, (err2) => {
        if (err2) { totals.subscribe_errors++; ws.terminate(); } else this.ready = true;
      });
    }));
    ws.on('message', (buf) => this.onMessage(buf.toString()));
    ws.on('error', () => {});
    ws.on('close', () => this.onClose(ws));
  }
  onClose(ws) {
    if (ws !== this.ws) return;
    if (this.ready) totals.disconnects++; else totals.connect_failures++;
    this.ready = false;
    for (const cb of this.pending.values()) cb(new Error('closed'));
    this.pending.clear();
    if (this.stopped) return;
    const delay = this.delay * (0.5 + Math.random());
    this.delay = Math.min(this.delay * 2, A.retryMaxMs);
    setTimeout(() => { if (!this.stopped) this.connect(); }, delay);
  }
  emit(event, data, cb) {
    const cid = ++this.cid;
    if (cb) this.pending.set(cid, cb);
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ event, data, cid }));
    else if (cb) { this.pending.delete(cid); cb(new Error('not open')); }
  }
  onMessage(text) {
    if (text === '#1') { if (this.ws.readyState === WebSocket.OPEN) this.ws.send('#2'); return; }
    let msg;
    try { msg = JSON.parse(text); } catch (e) { return; }
    if (msg.rid !== undefined) {
      const cb = this.pending.get(msg.rid);
      if (cb) { this.pending.delete(msg.rid); cb(msg.error || null, msg.data); }
    } else if (msg.event === '#publish' && msg.data && msg.data.data) {
      totals.deliveries++;
      this.received = true;
      if (kill && this.firstAfter === null && msg.data.data.t > kill.t) this.firstAfter = nowMs();
    }
  }
  close() { this.stopped = true; if (this.ws) this.ws.terminate(); }
}

let kill = null; // {label, t (monotonic ms)} of the kill being measured
const subs = [], pubs = [];
for (let i = 0; i < A.subs; i++) subs.push(new Client(i, true));
for (let i = 0; i < A.pubs; i++) pubs.push(new Client(i, false));

// every publisher publishes A.rate times a second, staggered; while disconnected it skips its turn
pubs.forEach((pub, i) => setTimeout(() => setInterval(() => {
  if (!pub.ready) return;
  totals.published++;
  pub.emit('#publish', { channel: A.channel, data: { t: nowMs(), p: i } }, (err) => {
    if (err) totals.publish_errors++; else totals.publish_acks++;
  });
}, 1000 / A.rate), i * 1000 / A.rate / A.pubs));

function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * p) - 1)] : null;
}

function measureKill(label, tNs) {
  kill = { label, t: tNs / 1e6 };
  const before = Object.assign({}, totals);
  for (const sub of subs) sub.firstAfter = null;
  const deadline = kill.t + A.window * 1000;
  const check = setInterval(() => {
    const waiting = subs.filter((sub) => sub.firstAfter === null).length;
    if (waiting && nowMs() < deadline) return;
    clearInterval(check);
    const times = subs.filter((sub) => sub.firstAfter !== null).map((sub) => sub.firstAfter - kill.t)
      .sort((x, y) => x - y);
    const delta = {};
    for (const k of Object.keys(totals)) delta[k] = totals[k] - before[k];
    out(Object.assign({ type: 'kill', label, received: times.length, missing: waiting,
      max_ms: times.length ? +times[times.length - 1].toFixed(1) : null,
      p50_ms: times.length ? +percentile(times, 0.5).toFixed(1) : null,
      p90_ms: times.length ? +percentile(times, 0.9).toFixed(1) : null }, delta));
    kill = null;
  }, 5);
}

function whenReady() {
  const started = nowMs();
  const check = setInterval(() => {
    const ready = subs.every((sub) => sub.ready && sub.received) && pubs.every((pub) => pub.ready);
    if (!ready && nowMs() - started < A.readyTimeout * 1000) return;
    clearInterval(check);
    out(Object.assign({ type: 'ready', ok: ready, ready_s: +((nowMs() - started) / 1000).toFixed(2) }, totals));
  }, 20);
}

function stop() {
  out(Object.assign({ type: 'done' }, totals));
  for (const c of subs.concat(pubs)) c.close();
  setTimeout(() => process.exit(0), 200);
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, label, tNs] = line.trim().split(/\s+/);
  if (cmd === 'kill') measureKill(label, Number(tNs));
  else if (cmd === 'stop') stop();
}).on('close', stop);
setTimeout(() => { out({ type: 'fatal', error: 'hard cap reached' }); process.exit(3); }, A.cap * 1000).unref();
whenReady();
