'use strict';
// Many official socketcluster-client connections on one channel, some of them publishing.
// Usage: node subscribers.js <port> <channel> <clients> <pause ms>
// Every client subscribes to <channel>.  Commands, one JSON line each on stdin:
//   {"publish": [i, ...]}  clients i, ... publish {p: i, n: 1, 2, ...} every <pause ms>;
//   {"stop": true}         they stop, then 'stopped' {client, count, errors} once all acked.
// Prints one JSON line per observation {event, client, data}: worker, subscribe, message
// {data, offset, epoch}, recovery, error; exits 2 after SCENARIO_TIMEOUT seconds.

const readline = require('readline');
const socketClusterClient = require('socketcluster-client');

const [port, channelName, count, pause] = process.argv.slice(2);
const timeout = Number(process.env.SCENARIO_TIMEOUT || 60);

function log(event, client, data) {
  process.stdout.write(JSON.stringify({event, client, data}) + '\n');
}

setTimeout(() => {
  log('timeout', null, timeout);
  process.exit(2);
}, timeout * 1000);

const clients = [];
for (let i = 0; i < Number(count); i++) {
  const client = socketClusterClient.create({
    hostname: '127.0.0.1',
    port: Number(port),
    multiplex: false,
    autoReconnectOptions: {initialDelay: 50, randomness: 20, multiplier: 1.5, maxDelay: 500},
  });
  client.on('error', (err) => log('error', i, {name: err.name, message: err.message}));
  client.on('worker', (data) => log('worker', i, data));
  client.on('#recovery', (data) => log('recovery', i, data));
  const channel = client.subscribe(channelName);
  channel.on('subscribe', () => log('subscribe', i, channelName));
  channel.watch((message) => log('message', i, message));
  clients.push(client);
}

const publishers = [];

function publish(i) {
  const state = {client: i, count: 0, acked: 0, errors: [], stopped: false};
  publishers.push(state);
  const next = () => {
    if (state.stopped) return;
    state.count += 1;
    clients[i].publish(channelName, {p: i, n: state.count}, (err) => {
      if (err) state.errors.push(err.message);
      state.acked += 1;
      report(state);
    });
    setTimeout(next, Number(pause));
  };
  next();
}

function report(state) {
  if (state.stopped && state.acked === state.count && !state.reported) {
    state.reported = true;
    log('stopped', state.client, {count: state.count, errors: state.errors});
  }
}

readline.createInterface({input: process.stdin}).on('line', (line) => {
  const command = JSON.parse(line);
  if (command.publish) command.publish.forEach(publish);
  if (command.stop) {
    for (const state of publishers) {
      state.stopped = true;
      report(state);
    }
  }
});
