'use strict';
// Drive the sample chat page (controllers/static/) in headless Chromium with playwright-core.
// Usage: node browser.js <base url> <screenshot path> [<broker pid>]
// Two pages in two browser contexts log in as alice and bob, with their sockets on two
// different workers. alice joins room/lobby and says two things; bob joins late and sees them
// from the room's history; each page lists both online. They chat, send a private message and
// roll a die. Then bob's worker is killed (kill -9) while bob's browser is offline; alice and
// an HTTP POST publish meanwhile; bob comes back online, reconnects and recovers them.
// With a broker pid: two pages in room/lobby (1 worker); bob disconnects, the broker is killed
// (kill -9), an HTTP POST publishes once the broker is back (alice sees it), and bob
// reconnects: the room's history was lost (a new epoch), so bob's page is told
// recovered: false and reloads the room from the new history.
// Prints one JSON line per step ({"event": name, ...}); the last one is "result".
// Exits 2 after BROWSER_TIMEOUT seconds (default 60). Chromium: CHROMIUM (/usr/bin/chromium).

const {launch, log, run} = require('./chromium');

const [baseUrl, screenshotPath, brokerPid] = process.argv.slice(2);
const MAX_RELOADS = 20;
const MAX_POSTS = 40;

// A fresh page in its own context (its own storage, so its own auth token), connected.
async function openPage(browser) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('console', (msg) => log('console', {text: msg.text()}));
  page.on('pageerror', (err) => log('pageerror', {message: err.message}));
  await page.goto(baseUrl);
  return page;
}

// The id of the worker serving the page's socket (shown once whoami answered).
async function workerOf(page) {
  await page.waitForFunction(() => document.getElementById('worker').textContent !== '?');
  return page.textContent('#worker');
}

async function login(page, name) {
  await page.fill('#name', name);
  await page.click('#login');
  await page.waitForFunction((n) => document.getElementById('user').textContent === n, name);
}

async function join(page, room) {
  await page.fill('#room', room);
  await page.click('#join');
  await page.waitForFunction((r) => document.getElementById('status').textContent === 'in room/' + r, room);
}

async function send(page, text) {
  await page.fill('#text', text);
  await page.click('#send');
}

async function waitForMessage(page, text) {
  await page.waitForFunction(
    (t) => Array.from(document.querySelectorAll('#messages li')).some((li) => li.textContent === t), text);
}

async function waitForText(page, selector, text) {
  await page.waitForFunction(
    ([s, t]) => document.querySelector(s).textContent === t, [selector, text]);
}

// Record the page's #recovery events (its socket is the page's global `socket`).
async function recordRecoveries(page) {
  await page.evaluate(() => {
    window.recoveries = [];
    socket.on('#recovery', (result) => window.recoveries.push(result));
  });
}

async function postMessage(room, text) {
  const response = await fetch(new URL('rooms/' + room + '/messages', baseUrl), {
    method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({text})});
  if (!response.ok) throw new Error('POST answered ' + response.status);
}

// Kill bob's worker while bob is offline; alice and HTTP publish; bob comes back and recovers.
async function killWorkerOf(bob, alice) {
  await recordRecoveries(bob);
  const pid = Number(await bob.textContent('#pid'));
  await bob.context().setOffline(true);
  process.kill(pid, 'SIGKILL');
  await waitForText(bob, '#status', 'disconnected');
  await waitForText(alice, '#online', 'alice');
  log('killed', {pid});
  await send(alice, 'while bob was away');
  await waitForMessage(alice, '[room/lobby] alice: while bob was away');
  await postMessage('lobby', 'from http');
  await waitForMessage(alice, '[room/lobby] http: from http');
  await bob.context().setOffline(false);
  await bob.waitForFunction((old) => !['?', String(old)].includes(
    document.getElementById('pid').textContent), pid);
  await waitForText(bob, '#status', 'in room/lobby');
  await waitForMessage(bob, '[room/lobby] http: from http');
  await waitForText(bob, '#online', 'alice, bob');
  await waitForText(alice, '#online', 'alice, bob');
  log('recovered');
  await send(alice, 'welcome back');
  await waitForMessage(bob, '[room/lobby] alice: welcome back');
  return pid;
}

// What a page shows (and the #recovery events recordRecoveries saw).
async function shown(page) {
  return {
    messages: await page.$$eval('#messages li', (items) => items.map((li) => li.textContent)),
    ack: await page.textContent('#ack'),
    errors: await page.textContent('#errors'),
    user: await page.textContent('#user'),
    online: await page.textContent('#online'),
    worker: await page.textContent('#worker'),
    pid: Number(await page.textContent('#pid')),
    recovery: await page.textContent('#recovery'),
    recoveries: await page.evaluate(() => window.recoveries || []),
  };
}

// POST until `watcher` shows the message: a publication is lost while its broker is down.
async function postOnceDelivered(watcher, room, text) {
  for (let attempt = 1; attempt <= MAX_POSTS; attempt += 1) {
    await postMessage(room, text);
    try {
      await watcher.waitForFunction((t) => Array.from(document.querySelectorAll('#messages li'))
        .some((li) => li.textContent === t), '[room/' + room + '] http: ' + text, {timeout: 500});
      return attempt;
    } catch (err) {
      if (err.name !== 'TimeoutError') throw err;
    }
  }
  throw new Error(text + ' was never delivered');
}

async function brokerKill(browser) {
  const alice = await openPage(browser);
  await join(alice, 'lobby');
  const bob = await openPage(browser);
  await login(bob, 'bob');
  await join(bob, 'lobby');
  await postMessage('lobby', 'before the restart');
  await waitForMessage(bob, '[room/lobby] http: before the restart');
  await recordRecoveries(bob);
  await bob.evaluate(() => socket.disconnect());
  await waitForText(bob, '#status', 'disconnected');
  process.kill(Number(brokerPid), 'SIGKILL');
  log('killed', {pid: Number(brokerPid)});
  log('posted', {attempts: await postOnceDelivered(alice, 'lobby', 'after the restart')});
  await bob.evaluate(() => socket.connect());
  await waitForText(bob, '#recovery', '1 message(s) from history');
  await waitForMessage(bob, '[room/lobby] http: after the restart');
  await waitForText(bob, '#online', '(anonymous), bob');
  await bob.screenshot({path: screenshotPath, fullPage: true});
  log('result', {alice: await shown(alice), bob: await shown(bob)});
}

async function chatAcrossWorkers(browser) {
  const alice = await openPage(browser);
  const aliceWorker = await workerOf(alice);
  const bob = await openPage(browser);
  let bobWorker = await workerOf(bob);
  let reloads = 0;
  while (bobWorker === aliceWorker && reloads < MAX_RELOADS) {
    reloads += 1;
    await bob.reload();
    bobWorker = await workerOf(bob);
  }
  log('workers', {alice: aliceWorker, bob: bobWorker, reloads});
  await login(alice, 'alice');
  await login(bob, 'bob');
  await join(alice, 'lobby');
  await send(alice, 'one');
  await waitForMessage(alice, '[room/lobby] alice: one');
  await send(alice, 'two');
  await waitForMessage(alice, '[room/lobby] alice: two');
  await join(bob, 'lobby');
  await waitForMessage(bob, '[room/lobby] alice: two');
  await waitForText(alice, '#online', 'alice, bob');
  await waitForText(bob, '#online', 'alice, bob');
  log('joined');
  await send(alice, 'hello from alice');
  await waitForMessage(bob, '[room/lobby] alice: hello from alice');
  await send(bob, 'hi alice');
  await waitForMessage(alice, '[room/lobby] bob: hi alice');
  await send(alice, '@bob psst');
  await waitForMessage(bob, '[private/bob] alice: psst');
  log('messages');
  await alice.click('#roll');
  await alice.waitForFunction(() => document.getElementById('ack').textContent !== '');
  const killed = await killWorkerOf(bob, alice);
  await bob.screenshot({path: screenshotPath, fullPage: true});
  log('result', {alice: await shown(alice), bob: await shown(bob),
    workers: [aliceWorker, bobWorker], reloads, killed});
}

async function main() {
  const browser = await launch();
  try {
    await (brokerPid ? brokerKill(browser) : chatAcrossWorkers(browser));
  } finally {
    await browser.close();
  }
}

run(main);
