'use strict';
// Drive a gsc server with the official socketcluster-client.
// Usage: node scenario.js <scenario> <port> [arg]
// Prints one JSON line per observation ({"event": name, "args": [...]}) and exits 0
// when the scenario ends; exits 2 after SCENARIO_TIMEOUT seconds (default 8).

const socketClusterClient = require('socketcluster-client');

const [name, port, arg] = process.argv.slice(2);
const timeout = Number(process.env.SCENARIO_TIMEOUT || 8);

function plain(_key, value) {
  if (value instanceof Error) {
    const out = {name: value.name, message: value.message};
    for (const k of Object.keys(value)) {
      if (k !== 'stack') out[k] = value[k];
    }
    return out;
  }
  return value;
}

function log(event, ...args) {
  process.stdout.write(JSON.stringify({event, args}, plain) + '\n');
}

const clients = [];

// Close every client normally (1000) outside the current callback, then exit.
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

function create(options) {
  const client = socketClusterClient.create(Object.assign({
    hostname: '127.0.0.1',
    port: Number(port),
    multiplex: false,
    ackTimeout: 1000,
    autoReconnectOptions: {initialDelay: 100, randomness: 50, multiplier: 1.5, maxDelay: 1000},
  }, options));
  client.on('error', (err) => log('error', err));
  clients.push(client);
  return client;
}

// Log every emission of the given client events with their arguments.
function record(client, ...events) {
  for (const event of events) {
    client.on(event, (...args) => log(event, ...args));
  }
}

const scenarios = {
  // B-058, B-091: the status of a plain connection.
  connect() {
    const client = create();
    client.on('connect', (status) => {
      log('connect', status, {id: client.id, authState: client.authState,
        pingTimeout: client.pingTimeout});
      finish();
    });
  },

  // X-07, B-042: an echo, an error response, an unanswered event (TimeoutError).
  emit() {
    const client = create();
    client.emit('echo', {a: 1, b: [1, 'two', null]}, (err, data) => {
      log('echo', err, data);
      client.emit('login', 'nobody', (err, data) => {
        log('login', err, data);
        client.emit('nobodyListens', 1, (err) => {
          log('nobodyListens', err);
          finish();
        });
      });
    });
  },

  // the server emits with a callback; the client answers.
  serverEmit() {
    const client = create();
    client.on('fromServer', (data, res) => {
      log('fromServer', data);
      res(null, {ack: true, got: data});
    });
    client.on('end', finish);
    client.on('connect', () => client.emit('ready'));
  },

  // B-002, B-003: client publish to its own channel, server publish through the exchange.
  pubsub() {
    const client = create();
    const channel = client.subscribe('pong');
    const received = [];
    channel.watch((data) => {
      received.push(data);
      log('watch', data);
      if (received.length === 2) finish();
    });
    channel.on('subscribe', () => {
      client.publish('pong', {message: 'published pong'}, (err, data) => {
        log('publish', err, data);
        client.emit('ping');
      });
    });
  },

  // Publications of every kind of data, from the client and from the server: what the
  // watcher gets (undefined kept apart from null) and the raw #publish frames.
  dataSweep() {
    const client = create();
    const values = [null, undefined, false, 0, '', {}, [], {a: [1, {b: null}], c: '', d: false}];
    const channel = client.subscribe('sweep');
    const expected = values.length * 2;
    let received = 0;
    client.on('message', (message) => {
      if (message.indexOf('"#publish"') !== -1) log('frame', message);
    });
    channel.watch((data) => {
      log('watch', data === undefined ? {undefined: true} : {value: data});
      received += 1;
      if (received === expected) finish();
    });
    channel.on('subscribe', () => {
      let index = 0;
      const next = () => {
        if (index < values.length) {
          const value = values[index++];
          client.publish('sweep', value, (err) => {
            if (err) log('publishError', err);
            next();
          });
        } else if (index < 2 * values.length) {
          const value = values[index++ - values.length];
          const data = value === undefined ? {channel: 'sweep'} : {channel: 'sweep', data: value};
          client.emit('serverPublish', data, (err) => {
            if (err) log('serverPublishError', err);
            next();
          });
        }
      };
      next();
    });
  },

  // B-012, B-042: login, then disconnect and connect again with the stored token.
  login() {
    const client = create();
    let connects = 0;
    client.on('connect', (status) => {
      connects += 1;
      log('connect', status, client.authState);
      if (connects === 1) {
        client.emit('login', 'bob', (err) => {
          log('login', err);
          client.disconnect();
          client.connect();
        });
      } else {
        finish();
      }
    });
    client.on('authenticate', (signedToken) => {
      log('authenticate', signedToken, client.authState, client.authToken);
    });
  },

  // B-043, B-103: a stored token signed with another key (arg), then authenticate('garbage').
  badToken() {
    const client = create({autoConnect: false});
    const changes = [];
    client.on('authStateChange', (change) => changes.push(change.oldState + '->' + change.newState));
    client.auth.saveToken(client.authTokenName, arg, {}, () => client.connect());
    client.on('connect', (status) => {
      log('connect', status, client.authState, client.signedAuthToken);
      client.emit('login', 'bob', () => {
        log('loggedIn', client.authState);
        client.authenticate('garbage', (err, authStatus) => {
          log('authenticate', err, authStatus, client.authState, changes);
          finish();
        });
      });
    });
  },

  // B-070, X-17: the server kicks the socket out of a channel.
  kickOut() {
    const client = create();
    const channel = client.subscribe('foo');
    channel.on('subscribe', () => client.emit('kickMe', 'foo'));
    client.on('kickOut', (message, channelName) => {
      log('kickOut', message, channelName);
      setTimeout(() => {
        log('state', channel.state, client.subscriptions(true));
        finish();
      }, 100);
    });
    record(client, 'unsubscribe');
  },

  // X-21, B-072: the server disconnects with a code and a reason.
  serverDisconnect() {
    const client = create({autoReconnect: false});
    client.on('connect', () => client.emit('disconnectMe'));
    client.on('disconnect', (code, reason) => {
      log('disconnect', code, reason);
      setTimeout(finish, 50);
    });
  },

  // X-22, B-113: the client disconnects with a code and a reason.
  clientDisconnect() {
    const client = create({autoReconnect: false});
    client.on('connect', () => client.disconnect(4444, 'client reason'));
    client.on('disconnect', (code, reason) => {
      log('disconnect', code, reason);
      setTimeout(finish, 100);
    });
  },

  // B-078, B-080: a handshakeSC middleware rejects with a status code; wait out a retry delay.
  handshakeReject() {
    const client = create();
    record(client, 'connect', 'connectAbort');
    client.on('close', () => setTimeout(finish, 400));
  },

  // pings keep an idle connection open for 2.5 s.
  ping() {
    const client = create();
    record(client, 'disconnect');
    client.on('connect', (status) => {
      log('connect', status, client.pingTimeout);
      setTimeout(() => {
        log('state', client.state, client.id);
        finish();
      }, 2500);
    });
  },

  // B-063: 20 channels subscribed in one batch; the middleware refuses one.
  batch() {
    const client = create();
    let settled = 0;
    const settle = () => {
      settled += 1;
      if (settled === 20) client.publish('my-channel-19', 'Hello!');
    };
    for (let i = 0; i < 20; i++) {
      const options = {batch: true};
      if (i === 10) options.data = {foo: 123};
      const channel = client.subscribe('my-channel-' + i, options);
      channel.on('subscribe', (channelName) => {
        log('subscribe', channelName);
        settle();
      });
      channel.on('subscribeFail', (err, channelName) => {
        log('subscribeFail', err, channelName);
        settle();
      });
    }
    client.channel('my-channel-19').watch((data) => {
      log('watch', 'my-channel-19', data);
      finish();
    });
  },

  // B-007: reconnect after a server disconnect (4xxx < 4500) and resubscribe automatically.
  resubscribe() {
    const client = create();
    let subscribed = 0;
    const received = [];
    for (const channelName of ['a', 'b']) {
      const channel = client.subscribe(channelName);
      channel.watch((data) => {
        received.push(data);
        log('watch', channelName, data);
        if (received.length === 2) finish();
      });
      channel.on('subscribe', () => {
        subscribed += 1;
        if (subscribed === 2) client.emit('dropMe');
        if (subscribed === 4) client.emit('publishToMe');
      });
    }
    client.on('connect', (status) => log('connect', status.id));
    record(client, 'disconnect');
  },

  // Presence: #join/#leave to a socket that asked, the #presence query, a reserved channel refused.
  presence() {
    const watcher = create({autoReconnect: false});
    watcher.on('#join', (data) => log('#join', data));
    watcher.on('#leave', (data) => {
      log('#leave', data);
      watcher.subscribe('#gsc/presence/room/1').on('subscribeFail', (err) => {
        log('reservedSubscribeFail', err);
        finish();
      });
    });
    watcher.subscribe('room/1', {data: {joinLeave: true}}).on('subscribe', () => {
      const other = create({autoReconnect: false});
      other.subscribe('room/1').on('subscribe', () => {
        watcher.emit('#presence', {channel: 'room/1'}, (err, data) => {
          log('presence', err, data, {watcher: watcher.id, other: other.id});
          other.disconnect();
        });
      });
    });
  },
};

const scenario = scenarios[name];
if (!scenario) {
  log('error', {name: 'UnknownScenario', message: String(name)});
  process.exit(3);
}
scenario();
