// The harness every Node scenario script of the tests shares (tests/conformance/*.js,
// tests/e2e/pusher/*.js): the script prints one JSON object per line on stdout, {"step": ...},
// which the driving Python test reads; `finish(code)` disconnects every client the script
// registered in `clients`, lets the disconnects leave, then exits; a watchdog prints
// {"step": "timeout"} and finishes with status 2 after SCENARIO_TIMEOUT_MS (environment) or
// the script's own default, so no scenario outlives its test.
// Usage: const { emit, finish, clients } = require('../support/scenario.js')
//          .scenario({ timeoutMs: 20000, graceMs: 200, onFinish: () => {} });
'use strict';

function scenario(options) {
  const opts = options || {};
  const timeoutMs = Number(process.env.SCENARIO_TIMEOUT_MS || opts.timeoutMs || 20000);
  const graceMs = opts.graceMs === undefined ? 200 : opts.graceMs;
  const clients = []; // anything with disconnect(): pusher-js clients, Laravel Echo instances

  function emit(step, fields) {
    process.stdout.write(JSON.stringify(Object.assign({ step }, fields || {})) + '\n');
  }

  function finish(code) {
    for (const client of clients) client.disconnect();
    setTimeout(() => {
      if (opts.onFinish) opts.onFinish();
      process.exit(code);
    }, graceMs);
  }

  setTimeout(() => { emit('timeout'); finish(2); }, timeoutMs).unref();
  return { emit, finish, clients };
}

module.exports = { scenario };
