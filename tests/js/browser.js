'use strict';
// Drive the sample chat page (controllers/static/) in headless Chromium with playwright-core.
// Usage: node browser.js <base url> <screenshot path>
// Two pages in two browser contexts log in as alice and bob, with their sockets on two
// different workers, join room/lobby, exchange messages, send a private one and roll a die.
// Prints one JSON line per step ({"event": name, ...}); the last one is "result".
// Exits 2 after BROWSER_TIMEOUT seconds (default 60). Chromium: CHROMIUM (/usr/bin/chromium).

const {launch, log, run} = require('./chromium');

const [baseUrl, screenshotPath] = process.argv.slice(2);
const MAX_RELOADS = 20;

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

async function main() {
  const browser = await launch();
  try {
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
    await join(bob, 'lobby');
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
    await bob.screenshot({path: screenshotPath, fullPage: true});
    const shown = async (page) => ({
      messages: await page.$$eval('#messages li', (items) => items.map((li) => li.textContent)),
      ack: await page.textContent('#ack'),
      errors: await page.textContent('#errors'),
      user: await page.textContent('#user'),
    });
    log('result', {alice: await shown(alice), bob: await shown(bob),
      workers: [aliceWorker, bobWorker], reloads});
  } finally {
    await browser.close();
  }
}

run(main);
