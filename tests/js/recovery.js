'use strict';
// The official socketcluster-client recovering a channel with history across reconnects.
// Usage: node recovery.js <port> <channel> <last>
// The app keeps channel.data = {recover: {offset, epoch}} from each message (the channel has
// publishOffsets), so the client's automatic resubscribe carries the position.  Prints one
// JSON line per observation: worker, subscribe, message {data, offset, epoch}, recovery;
// 'done' after the message whose data is <last>; exits 2 after SCENARIO_TIMEOUT seconds.

const socketClusterClient = require('socketcluster-client');

const [port, channelName, last] = process.argv.slice(2);
const timeout = Number(process.env.SCENARIO_TIMEOUT || 20);

function log(event, data) {
  process.stdout.write(JSON.stringify({event, data}) + '\n');
}

setTimeout(() => {
  log('timeout', timeout);
  process.exit(2);
}, timeout * 1000);

const client = socketClusterClient.create({
  hostname: '127.0.0.1',
  port: Number(port),
  multiplex: false,
  autoReconnectOptions: {initialDelay: 50, randomness: 20, multiplier: 1.5, maxDelay: 500},
});
client.on('error', (err) => log('error', {name: err.name, message: err.message}));
client.on('worker', (data) => log('worker', data));
client.on('#recovery', (data) => log('recovery', data));

const channel = client.subscribe(channelName);
channel.on('subscribe', () => log('subscribe', channelName));
channel.watch((message) => {
  channel.data = {recover: {offset: message.offset, epoch: message.epoch}};
  log('message', message);
  if (String(message.data) === last) {
    log('done', null);
    client.destroy();
    setTimeout(() => process.exit(0), 50);
  }
});
