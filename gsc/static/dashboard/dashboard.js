// The gsc cluster dashboard: logs in over the official socketcluster-client (a password
// answered with a dashboard token, or a token signed with the authKey from #token= / ?token=),
// watches the #gsc/dashboard feed (one message a second from worker 0) and shows it: a table
// of workers and brokers, the Redis links and uPlot charts of the last five minutes.
(function () {
  'use strict';

  var CHANNEL = '#gsc/dashboard';
  var LOGIN_EVENT = '#gsc/dashboard/login';
  var TOKEN_NAME = 'gscDashboardToken';
  var HISTORY = 300;
  var STALE_MS = 3500;
  var CHART_HEIGHT = 200;
  var COLORS = ['#4dabf7', '#ff922b', '#51cf66', '#f06595', '#fcc419', '#845ef7', '#22b8cf',
    '#ff6b6b', '#94d82d', '#cc5de8'];

  var $ = function (id) { return document.getElementById(id); };
  var urlToken = takeUrlToken();
  var socket = socketCluster.create({
    path: document.body.dataset.socketPath, authTokenName: TOKEN_NAME, autoReconnect: true});
  var feed = null;
  var lastMessageAt = 0;
  var instances = {};
  var selected = null;

  // A token given in the URL is taken once and removed from the address bar.
  function takeUrlToken() {
    var token = new URLSearchParams(location.hash.slice(1)).get('token') ||
      new URLSearchParams(location.search).get('token');
    if (token) history.replaceState(null, '', location.pathname);
    return token;
  }

  function isViewer() {
    return !!(socket.authToken && socket.authToken.gscDashboard === true);
  }

  function setStatus(text, kind) {
    var status = $('status');
    status.textContent = text;
    status.className = 'badge ' + (kind || '');
  }

  function showLogin(error) {
    $('login').hidden = false;
    $('login-error').textContent = error || '';
    setStatus('log in', 'warn');
  }

  function watchFeed() {
    $('login').hidden = true;
    $('board').hidden = false;
    if (feed) return;
    feed = socket.subscribe(CHANNEL);
    feed.watch(show);
    feed.on('subscribe', function () { setStatus('waiting for data…', 'warn'); });
    feed.on('subscribeFail', function (err) { dropFeed('Feed refused: ' + err.message); });
    feed.on('kickOut', function (message) { dropFeed(message); });
  }

  // Back to the login form; the next login subscribes afresh.
  function dropFeed(reason) {
    socket.destroyChannel(CHANNEL);
    feed = null;
    showLogin(reason);
  }

  socket.on('connect', function () {
    if (isViewer()) {
      watchFeed();
    } else if (urlToken) {
      var token = urlToken;
      urlToken = null;
      socket.authenticate(token, function (err, status) {
        if (!err && isViewer()) {
          watchFeed();
          return;
        }
        var reason = err || (status && status.authError);
        showLogin('Token refused: ' + (reason ? reason.message : 'it does not carry gscDashboard'));
      });
    } else {
      showLogin();
    }
  });
  socket.on('disconnect', function () { setStatus('disconnected - reconnecting…', 'bad'); });
  socket.on('error', function () {});

  $('login-form').addEventListener('submit', function (event) {
    event.preventDefault();
    $('login-error').textContent = '';
    socket.emit(LOGIN_EVENT, {password: $('password').value}, function (err) {
      $('password').value = '';
      if (err) {
        showLogin(err.message);
      } else {
        watchFeed();
      }
    });
  });

  setInterval(function () {
    if (lastMessageAt && Date.now() - lastMessageAt > STALE_MS && socket.state === 'open') {
      setStatus('stale: no data for ' + Math.round((Date.now() - lastMessageAt) / 1000) + ' s', 'bad');
    }
  }, 1000);

  // -- formatting -------------------------------------------------------------------------

  function num(value) {
    return value == null ? '–' : String(value);
  }

  function megabytes(bytes) {
    return bytes == null ? '–' : (bytes / 1048576).toFixed(1) + ' MB';
  }

  function sum(items, key) {
    var total = null;
    items.forEach(function (item) {
      if (item[key] != null) total = (total || 0) + item[key];
    });
    return total;
  }

  function cell(row, text, className) {
    var td = document.createElement('td');
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
  }

  // -- the tables ------------------------------------------------------------------------

  function fillTable(id, items, columns) {
    var body = $(id).tBodies[0];
    body.textContent = '';
    items.forEach(function (item) {
      var row = document.createElement('tr');
      row.dataset.id = item.id;
      row.className = item.state === 'up' ? '' : 'down';
      cell(row, item.id);
      cell(row, item.state, 'state');
      cell(row, num(item.pid), 'pid');
      columns.forEach(function (column) { cell(row, column(item)); });
      cell(row, item.restarts, item.restarts ? 'restarts warn' : 'restarts');
      body.appendChild(row);
    });
  }

  function card(label, value, kind) {
    var div = document.createElement('div');
    div.className = 'card ' + (kind || '');
    var strong = document.createElement('strong');
    strong.textContent = value;
    var span = document.createElement('span');
    span.textContent = label;
    div.appendChild(strong);
    div.appendChild(span);
    return div;
  }

  function redisText(redis) {
    if (!redis) return ['not used', ''];
    return [redis.up + '/' + redis.of + ' links up', redis.up === redis.of ? 'good' : 'bad'];
  }

  function fillSummary(message) {
    var workers = message.workers;
    var up = workers.filter(function (w) { return w.state === 'up'; }).length;
    var brokersUp = message.brokers.filter(function (b) { return b.state === 'up'; }).length;
    var redis = redisText(message.redis);
    var summary = $('summary');
    summary.textContent = '';
    summary.appendChild(card('workers up', up + '/' + workers.length, up === workers.length ? 'good' : 'bad'));
    summary.appendChild(card('brokers up', brokersUp + '/' + message.brokers.length,
      brokersUp === message.brokers.length ? 'good' : 'bad'));
    summary.appendChild(card('connections', num(sum(workers, 'connections'))));
    summary.appendChild(card('msgs in/s', num(round(sum(workers, 'inPerSec')))));
    summary.appendChild(card('msgs out/s', num(round(sum(workers, 'outPerSec')))));
    summary.appendChild(card('Redis', redis[0], redis[1]));
  }

  function round(value) {
    return value == null ? null : Math.round(value * 10) / 10;
  }

  // -- the charts ------------------------------------------------------------------------

  // A count's axis shows whole numbers only.
  function wholeNumber(v) {
    return Number.isInteger(v) ? String(v) : '';
  }

  function workerLabel(w) { return 'worker ' + w.id; }
  function brokerLabel(b) { return 'broker ' + b.id; }

  var CHARTS = [
    {id: 'chart-connections', title: 'Connections', format: wholeNumber,
      labels: function (m) { return m.workers.map(workerLabel); },
      values: function (m) { return m.workers.map(function (w) { return w.connections; }); }},
    {id: 'chart-messages', title: 'Messages per second',
      format: function (v) { return String(round(v)); },
      labels: function () { return ['in (from clients)', 'out (to clients)', 'broker publications']; },
      values: function (m) {
        return [sum(m.workers, 'inPerSec'), sum(m.workers, 'outPerSec'), sum(m.brokers, 'publishesPerSec')];
      }},
    {id: 'chart-memory', title: 'Resident memory', format: megabytes,
      labels: function (m) { return m.workers.map(workerLabel).concat(m.brokers.map(brokerLabel)); },
      values: function (m) { return m.workers.concat(m.brokers).map(function (p) { return p.rss; }); }},
  ];
  var plots = [];
  var plotted = null;

  function chartWidth(el) {
    return Math.max(300, el.clientWidth - 16);
  }

  function makeChart(spec, labels, data) {
    var el = $(spec.id);
    var series = [{}].concat(labels.map(function (label, i) {
      return {label: label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: false,
        value: function (u, v) { return v == null ? '–' : spec.format(v); }};
    }));
    var axis = {stroke: '#9aa4b2', grid: {stroke: '#2a313c', width: 1}, ticks: {stroke: '#2a313c'}};
    var opts = {
      title: spec.title, width: chartWidth(el), height: CHART_HEIGHT, series: series,
      scales: {x: {time: true}, y: {range: function (u, min, max) { return [0, Math.max(1, max * 1.15)]; }}},
      axes: [axis, Object.assign({size: 70, values: function (u, ticks) { return ticks.map(spec.format); }}, axis)],
    };
    return new uPlot(opts, data, el);
  }

  // Keep the last HISTORY points of every chart of one instance (a new shape starts afresh).
  function record(instance, message) {
    var time = message.time / 1000;
    CHARTS.forEach(function (spec, i) {
      var values = spec.values(message);
      var data = instance.history[i];
      if (!data || data.length !== values.length + 1) {
        data = instance.history[i] = [[]].concat(values.map(function () { return []; }));
      }
      data[0].push(time);
      values.forEach(function (value, j) { data[j + 1].push(value == null ? null : value); });
      if (data[0].length > HISTORY) data.forEach(function (column) { column.shift(); });
    });
  }

  function draw(instance) {
    CHARTS.forEach(function (spec, i) {
      var data = instance.history[i];
      var plot = plots[i];
      if (plot && (plotted !== instance || plot.series.length !== data.length)) {
        plot.destroy();
        plot = null;
      }
      if (plot) {
        plot.setData(data);
      } else {
        plots[i] = makeChart(spec, spec.labels(instance.message), data);
      }
      $(spec.id).dataset.points = data[0].length;
    });
    plotted = instance;
  }

  window.addEventListener('resize', function () {
    plots.forEach(function (plot, i) {
      plot.setSize({width: chartWidth($(CHARTS[i].id)), height: CHART_HEIGHT});
    });
  });

  // -- the feed: one message a second per instance (instances of an app on Redis share it) --

  function instanceOf(message) {
    var key = String(message.instance);
    var instance = instances[key];
    if (!instance) {
      instance = instances[key] = {key: key, history: [], message: null};
      var option = document.createElement('option');
      option.value = key;
      option.textContent = (message.appName || 'gsc') + ' · ' + key.slice(0, 8);
      $('instance').appendChild(option);
      $('instance').hidden = Object.keys(instances).length < 2;
      if (selected === null) selected = key;
    }
    return instance;
  }

  $('instance').addEventListener('change', function () {
    selected = $('instance').value;
    render(instances[selected]);
  });

  function show(message) {
    lastMessageAt = Date.now();
    var instance = instanceOf(message);
    instance.message = message;
    if (!message.error) record(instance, message);
    if (instance.key === selected) render(instance);
  }

  function render(instance) {
    var message = instance.message;
    $('updated').textContent = 'updated ' + new Date(message.time).toLocaleTimeString();
    if (message.error) {
      setStatus(message.error, 'bad');
      return;
    }
    $('app').textContent = message.appName || '';
    setStatus(message.workerCluster === 'up' ? 'live' : 'worker cluster ' + message.workerCluster,
      message.workerCluster === 'up' ? 'good' : 'bad');
    fillSummary(message);
    fillTable('workers', message.workers, [
      function (w) { return num(w.connections); },
      function (w) { return num(w.inPerSec); },
      function (w) { return num(w.outPerSec); },
      function (w) { return megabytes(w.rss); },
    ]);
    fillTable('brokers', message.brokers, [
      function (b) { return num(b.channels); },
      function (b) { return num(b.keys); },
      function (b) { return num(b.publishesPerSec); },
      function (b) { return megabytes(b.rss); },
    ]);
    draw(instance);
  }
}());
