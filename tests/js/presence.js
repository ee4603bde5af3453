'use strict';
// Presence with the official socketcluster-client: #join/#leave events, the #presence query,
// a reserved #gsc/ channel refused.  Usage: node presence.js <port>
// Prints one JSON line per observation ({"event": name, "args": [...]}); exits 0 when done,
// 2 after PRESENCE_TIMEOUT seconds (default 8).

const socketClusterClient = require('socketcluster-client');

const port = Number(process.argv[2]);
const timeout = Number(process.env.PRESENCE_TIMEOUT || 8);
const clients = [];

function log(event, ...args) {
  const plain = (_key, value) => (value instanceof Error ? {name: value.name, message: value.message} : value);
  process.stdout.write(JSON.stringify({event, args}, plain) + '\n');
}

function create() {
  const client = socketClusterClient.create({hostname: '127.0.0.1', port, multiplex: false,
    ackTimeout: 2000, autoReconnect: false});
  client.on('error', (err) => log('error', err));
  clients.push(client);
  return client;
}

function finish() {
  log('done');
  setTimeout(() => {
    for (const client of clients) {
      client.off();
      client.destroy();
    }
    setTimeout(() => process.exit(0), 50);
  }, 0);
}

setTimeout(() => {
  log('timeout', timeout);
  process.exit(2);
}, timeout * 1000);

const watcher = create();
watcher.on('#join', (data) => log('#join', data));
watcher.on('#leave', (data) => {
  log('#leave', data);
  watcher.subscribe('#gsc/presence/room/1').on('subscribeFail', (err) => {
    log('reservedSubscribeFail', err);
    finish();
  });
});
watcher.subscribe('room/1', {data: {joinLeave: true}}).on('subscribe', () => {
  const other = create();
  other.subscribe('room/1').on('subscribe', () => {
    watcher.emit('#presence', {channel: 'room/1'}, (err, data) => {
      log('presence', err, data, {watcher: watcher.id, other: other.id});
      other.disconnect();
    });
  });
});
