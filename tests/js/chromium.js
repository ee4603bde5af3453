'use strict';
// What the headless Chromium drivers (browser.js, dashboard.js) share: the launch of
// Chromium (CHROMIUM, default /usr/bin/chromium) with playwright-core, one JSON line per
// step on stdout, and the run of main(): exit 0 when it resolves, 1 when it fails, 2 after
// BROWSER_TIMEOUT seconds (default 60).

const {chromium} = require('playwright-core');

const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

function log(event, fields) {
  process.stdout.write(JSON.stringify(Object.assign({event}, fields)) + '\n');
}

function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ARGS, timeout: 20000});
}

function run(main) {
  const timeout = Number(process.env.BROWSER_TIMEOUT || 60);
  setTimeout(() => {
    log('timeout', {seconds: timeout});
    process.exit(2);
  }, timeout * 1000).unref();
  main().then(() => process.exit(0), (err) => {
    log('fail', {message: String(err && err.stack || err)});
    process.exit(1);
  });
}

module.exports = {launch, log, run};
