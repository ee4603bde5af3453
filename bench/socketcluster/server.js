// SocketCluster 14.4.2 itself, the reference server of gsc's benchmark (bench/run_all.py).
//   node bench/socketcluster/server.js --port P [--workers N] [--brokers N]
// A master, N workers (worker.js: `echo` answers its data, `pid` answers the worker's pid) and
// N brokers (broker.js); client publish allowed; 127.0.0.1 only; pings as rare as the gsc bench
// server's. Extra SocketCluster options may come as JSON in SOCKETCLUSTER_OPTIONS.
'use strict';
const path = require('path');
const SocketCluster = require('socketcluster');

const PING_INTERVAL_MS = 3600 * 1000;

function parseArgs(argv) {
  const a = { port: 0, workers: 1, brokers: 1 };
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in a)) throw new Error('unknown option ' + argv[i]);
    a[key] = Number(argv[i + 1]);
  }
  if (!a.port) throw new Error('--port required');
  return a;
}

const args = parseArgs(process.argv);
const options = Object.assign({
  host: '127.0.0.1',
  port: args.port,
  workers: args.workers,
  brokers: args.brokers,
  workerController: path.join(__dirname, 'worker.js'),
  brokerController: path.join(__dirname, 'broker.js'),
  pingInterval: PING_INTERVAL_MS,
  pingTimeout: 2 * PING_INTERVAL_MS,
  allowClientPublish: true,
  environment: 'prod',
  logLevel: 1,
}, JSON.parse(process.env.SOCKETCLUSTER_OPTIONS || '{}'));

const socketCluster = new SocketCluster(options);
socketCluster.on('ready', () => console.log('SocketCluster ready on port ' + options.port));
