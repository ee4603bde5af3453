'use strict';
// Drive the gsc cluster dashboard in headless Chromium with playwright-core.
// Usage: node dashboard.js <page url> <password> <screenshot path> [<page url with #token=>]
// A page is refused a wrong password, logs in with the right one and waits until the workers
// table shows every worker's pid and the charts have drawn a few seconds of the feed, then
// takes a screenshot; a second page (when given) logs in with the token in its URL.
// Prints one JSON line per step ({"event": name, ...}); the last one is "result".

const {launch, log, run} = require('./chromium');

const [pageUrl, password, screenshotPath, tokenUrl] = process.argv.slice(2);
const POINTS = 4;

async function openPage(browser, url) {
  const context = await browser.newContext({viewport: {width: 1280, height: 900}});
  const page = await context.newPage();
  page.on('console', (msg) => log('console', {text: msg.text()}));
  page.on('pageerror', (err) => log('pageerror', {message: err.message}));
  await page.goto(url);
  return page;
}

async function logIn(page, text) {
  await page.waitForSelector('#password', {state: 'visible'});
  await page.fill('#password', text);
  await page.click('#login-button');
}

// The pids in the workers table once every row shows one.
async function workerPids(page) {
  await page.waitForFunction(() => {
    const cells = Array.from(document.querySelectorAll('#workers tbody td.pid'));
    return cells.length > 0 && cells.every((td) => /^\d+$/.test(td.textContent));
  });
  return page.$$eval('#workers tbody td.pid', (cells) => cells.map((td) => Number(td.textContent)));
}

// Painted (non-transparent) pixels of each chart's canvas, once each holds POINTS points.
async function paintedCharts(page) {
  await page.waitForFunction((points) => Array.from(document.querySelectorAll('.chart'))
    .every((chart) => Number(chart.dataset.points || 0) >= points), POINTS);
  return page.$$eval('.chart', (charts) => charts.map((chart) => {
    const canvas = chart.querySelector('canvas');
    const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let painted = 0;
    for (let i = 3; i < pixels.length; i += 4) {
      if (pixels[i] !== 0) painted += 1;
    }
    return {id: chart.id, painted, title: chart.querySelector('.u-title').textContent};
  }));
}

async function main() {
  const browser = await launch();
  try {
    const page = await openPage(browser, pageUrl);
    await logIn(page, 'not the password');
    await page.waitForFunction(() => document.getElementById('login-error').textContent !== '');
    const refused = await page.textContent('#login-error');
    log('refused', {refused});
    await logIn(page, password);
    const pids = await workerPids(page);
    const charts = await paintedCharts(page);
    await page.screenshot({path: screenshotPath, fullPage: true});
    const shown = {
      status: await page.textContent('#status'),
      brokers: await page.$$eval('#brokers tbody tr', (rows) => rows.length),
      summary: await page.textContent('#summary'),
    };
    log('shown', shown);
    let token = null;
    if (tokenUrl) {
      const tokenPage = await openPage(browser, tokenUrl);
      token = {pids: await workerPids(tokenPage), url: tokenPage.url(),
        loginShown: await tokenPage.isVisible('#login')};
    }
    log('result', {refused, pids, charts, token, shown});
  } finally {
    await browser.close();
  }
}

run(main);
