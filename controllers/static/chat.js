// The chat page: socketcluster-client 14 against the sample worker controller (worker.py).
// Rooms (room/*) have history with publishOffsets and presence (run.py's sample options):
// joining shows the last 50 messages, a reconnect recovers what was missed, and the page
// lists who is online in the room.
'use strict';

var HISTORY = 50;
var socket = socketCluster.create({  // this page's host and port, path /socketcluster/
  // back soon after a worker dies, spread over a second so that its clients do not all
  // come back at once
  autoReconnectOptions: {initialDelay: 500, randomness: 1000, multiplier: 1.5, maxDelay: 10000},
});
var room = null;     // the room's channel
var last = null;     // {offset, epoch} of the room's last message shown
var members = {};    // socketId -> user, of the room
var changes = null;  // #join/#leave that arrived while #presence was asked, else null

function $(id) { return document.getElementById(id); }

function show(text, className) {
  var item = document.createElement('li');
  item.textContent = text;
  item.className = className || '';
  $('messages').appendChild(item);
}

function fail(err) { $('errors').textContent = err.name + ': ' + err.message; }

function showOnline() {
  var names = {};
  Object.keys(members).forEach(function (id) {
    names[members[id] === null ? '(anonymous)' : members[id]] = true;
  });
  $('online').textContent = Object.keys(names).sort().join(', ');
}

function applyChange(event, data) {
  if (event === '#join') members[data.socketId] = data.user;
  else delete members[data.socketId];
}

// Who is in the room now; the #join/#leave met while asking are applied on top of the answer.
function askPresence(channelName) {
  changes = [];
  socket.emit('#presence', {channel: channelName}, function (err, answer) {
    var met = changes;
    changes = null;
    if (err) return fail(err);
    if (!room || room.name !== channelName) return;
    members = {};
    answer.members.forEach(function (member) { members[member.socketId] = member.user; });
    met.forEach(function (change) { applyChange(change[0], change[1]); });
    showOnline();
  });
}

['#join', '#leave'].forEach(function (event) {
  socket.on(event, function (data) {
    if (!room || data.channel !== room.name) return;
    if (changes) changes.push([event, data]);
    else {
      applyChange(event, data);
      showOnline();
    }
  });
});

// The room's messages come as {data, offset, epoch}; the channel's data carries the
// position, so the client's automatic resubscribe after a reconnect recovers from it.
function joinRoom(channelName) {
  last = null;
  members = {};
  $('messages').textContent = '';
  showOnline();
  room = socket.subscribe(channelName, {data: {history: HISTORY, joinLeave: true}});
  room.on('subscribeFail', fail);
  room.on('subscribe', function () {
    $('status').textContent = 'in ' + channelName;
    askPresence(channelName);
  });
  room.watch(function (message) {
    if (last && message.epoch === last.epoch && message.offset <= last.offset) return;
    last = {offset: message.offset, epoch: message.epoch};
    room.data = {recover: last, joinLeave: true};
    show('[' + channelName + '] ' + message.data.from + ': ' + message.data.text);
  });
}

// The gap could not be recovered (a broker restarted): show the room's last messages again.
function reloadRoom() {
  $('messages').textContent = '';
  socket.unsubscribe(room.name);
  socket.subscribe(room.name, {data: {history: HISTORY, joinLeave: true}});
}

socket.on('#recovery', function (result) {
  if (!room || result.channel !== room.name) return;
  $('recovery').textContent = result.recovered ?
    result.missed + ' message(s) from history' : 'history lost: reloaded';
  if (!result.recovered) reloadRoom();
});

socket.on('error', function (err) { console.log('socket error', err); });

socket.on('connect', function () {
  $('status').textContent = 'connected';
  socket.emit('whoami', null, function (err, me) {
    if (err) return fail(err);
    $('worker').textContent = me.worker;
    $('pid').textContent = me.pid;
  });
});

socket.on('disconnect', function () {
  $('status').textContent = 'disconnected';
  members = {};  // asked again on the resubscribe
  showOnline();
});

$('login-form').onsubmit = function (event) {
  event.preventDefault();
  socket.emit('login', $('name').value, function (err, me) {
    if (err) return fail(err);
    $('user').textContent = me.username;
    var inbox = socket.subscribe('private/' + me.username);  // refused for anyone else
    inbox.on('subscribeFail', fail);
    inbox.watch(function (message) {
      show('[' + inbox.name + '] ' + message.from + ': ' + message.text, 'private');
    });
  });
};

$('room-form').onsubmit = function (event) {
  event.preventDefault();
  if (room) socket.destroyChannel(room.name);
  joinRoom('room/' + $('room').value);
};

$('message-form').onsubmit = function (event) {
  event.preventDefault();
  var text = $('text').value;
  var to = /^@([\w.-]+) (.*)$/.exec(text);  // "@bob hi" goes to private/bob
  var channel = to ? 'private/' + to[1] : room && room.name;
  if (!channel) return fail({name: 'Error', message: 'join a room first'});
  socket.publish(channel, {text: to ? to[2] : text}, function (err) {
    if (err) return fail(err);
    $('text').value = '';
  });
};

$('roll').onclick = function () {
  socket.emit('roll', null, function (err, answer) {
    if (err) return fail(err);
    $('ack').textContent = 'rpc ack: ' + answer.username + ' rolled ' + answer.roll;
  });
};
