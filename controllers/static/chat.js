// The chat page: socketcluster-client 14 against the sample worker controller (worker.py).
'use strict';

var socket = socketCluster.create();  // this page's host and port, path /socketcluster/
var room = null;

function $(id) { return document.getElementById(id); }

function show(text, className) {
  var item = document.createElement('li');
  item.textContent = text;
  item.className = className || '';
  $('messages').appendChild(item);
}

function fail(err) { $('errors').textContent = err.name + ': ' + err.message; }

function watch(channelName, className) {
  var channel = socket.subscribe(channelName);
  channel.on('subscribeFail', fail);
  channel.watch(function (message) {
    show('[' + channelName + '] ' + message.from + ': ' + message.text, className);
  });
  return channel;
}

socket.on('error', function (err) { console.log('socket error', err); });

socket.on('connect', function () {
  $('status').textContent = 'connected';
  socket.emit('whoami', null, function (err, me) {
    if (err) return fail(err);
    $('worker').textContent = me.worker;
  });
});

socket.on('disconnect', function () { $('status').textContent = 'disconnected'; });

$('login-form').onsubmit = function (event) {
  event.preventDefault();
  socket.emit('login', $('name').value, function (err, me) {
    if (err) return fail(err);
    $('user').textContent = me.username;
    watch('private/' + me.username, 'private');  // refused for anyone else
  });
};

$('room-form').onsubmit = function (event) {
  event.preventDefault();
  if (room) socket.unsubscribe(room);
  room = 'room/' + $('room').value;
  watch(room).on('subscribe', function () { $('status').textContent = 'in ' + room; });
};

$('message-form').onsubmit = function (event) {
  event.preventDefault();
  var text = $('text').value;
  var to = /^@([\w.-]+) (.*)$/.exec(text);  // "@bob hi" goes to private/bob
  var channel = to ? 'private/' + to[1] : room;
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
