// Laravel Echo (npm laravel-echo 2.x, broadcaster 'pusher', the pusher-js 8 client) against one
// Pusher-protocol server: soketi or ours; the same code for both (only host and port differ).
// Usage: node laravel_echo.js <scenario>. Configuration from the environment
// (tests/conformance/conftest.py, Server.client_env(), plus the test's own):
//   SERVER, PUSHER_KEY, WS_HOST, WS_PORT, AUTH_BASE (our app: /pusher/auth for both servers),
//   TOKEN_A, TOKEN_B (dev issuer JWTs of two users), USER_A (user id of TOKEN_A), ROOM.
// Prints one JSON object per line on stdout: {"step": ...}. The driving test
// (test_laravel_echo.py) reads them, and triggers server events with the Python library.
// Every scenario ends by itself: a watchdog exits with status 2 after SCENARIO_TIMEOUT_MS.
'use strict';

const Pusher = require('pusher-js');
// laravel-echo 2.x is an ES module (what Laravel's Vite builds import); its `require` build
// (dist/echo.common.js) does not load under Node ("type": "module"), so it is imported.
let Echo = null;

const env = process.env;
const { emit, finish, clients: echoes } = require('../support/scenario.js')
  .scenario({ timeoutMs: 20000 });

// Echo as a Laravel app configures it for a self-hosted Pusher-protocol server.
function connect(token) {
  const headers = { Authorization: 'Bearer ' + token };
  const echo = new Echo({
    broadcaster: 'pusher',
    Pusher,
    key: env.PUSHER_KEY,
    cluster: 'mt1',
    wsHost: env.WS_HOST,
    wsPort: Number(env.WS_PORT),
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    authEndpoint: env.AUTH_BASE + '/pusher/auth',
    // own objects per client (Echo's defaults share one `auth.headers` between instances)
    auth: { headers },
    userAuthentication: { endpoint: env.AUTH_BASE + '/pusher/user-auth', headers },
  });
  echoes.push(echo);
  return echo;
}

function failOn(channel, who) {
  channel.error((error) => { emit('subscription_error', { who, error }); finish(1); });
  return channel;
}

function sortedInfos(members) {
  return members.slice().sort((a, b) => JSON.stringify(a) < JSON.stringify(b) ? -1 : 1);
}

const scenarios = {
  // private(name).listen('.event'): the test triggers "greet" on private-user-<USER_A>
  // and an event named as Laravel names a broadcast event class: listen('OrderShipped') with
  // Echo's default namespace (App.Events) is the event App\Events\OrderShipped
  listen() {
    const channel = failOn(connect(env.TOKEN_A).private('user-' + env.USER_A), 'a');
    let pending = 2;
    const got = (event) => (data) => {
      emit('received', { event, data });
      pending -= 1;
      if (pending === 0) finish(0);
    };
    channel.listen('.greet', got('greet'));
    channel.listen('OrderShipped', got('OrderShipped'));
    channel.subscribed(() => emit('ready', { channel: channel.name }));
  },

  // whisper / listenForWhisper between two users on a presence channel (client events)
  whisper() {
    const a = failOn(connect(env.TOKEN_A).join(env.ROOM), 'a');
    a.listenForWhisper('typing', (data) => emit('echoed_to_sender', { data }));
    a.here(() => {
      const b = failOn(connect(env.TOKEN_B).join(env.ROOM), 'b');
      b.listenForWhisper('typing', (data) => {
        emit('whisper', { data });
        setTimeout(() => finish(0), 500); // time for an echo to the sender to show up
      });
      b.here(() => a.whisper('typing', { from: 'a', n: 1 }));
    });
  },

  // whisper on a private channel between two connections of one user (the app's rules give
  // private-user-<id> to that user alone: two tabs or devices of theirs)
  whisper_private() {
    const name = 'user-' + env.USER_A;
    const a = failOn(connect(env.TOKEN_A).private(name), 'a');
    a.listenForWhisper('typing', (data) => emit('echoed_to_sender', { data }));
    a.subscribed(() => {
      const b = failOn(connect(env.TOKEN_A).private(name), 'b');
      b.listenForWhisper('typing', (data) => {
        emit('whisper', { data });
        setTimeout(() => finish(0), 500); // time for an echo to the sender to show up
      });
      b.subscribed(() => a.whisper('typing', { from: 'a', n: 2 }));
    });
  },

  // presence: here (the member list), joining, leaving (b leaves once both saw the join:
  // Echo's leave() unsubscribes; with LEAVE_BY=disconnect, Echo's disconnect() closes)
  presence() {
    const a = failOn(connect(env.TOKEN_A).join(env.ROOM), 'a');
    let echoB = null;
    let pending = 2; // a's joining(b) and b's here, in either order
    const joined = () => {
      pending -= 1;
      if (pending !== 0) return;
      // LEAVE_BY=disconnect: b closes its connection instead of unsubscribing
      if (env.LEAVE_BY === 'disconnect') echoB.disconnect(); else echoB.leave(env.ROOM);
    };
    a.here((members) => {
      emit('a_here', { members: sortedInfos(members) });
      echoB = connect(env.TOKEN_B);
      failOn(echoB.join(env.ROOM), 'b').here((members) => {
        emit('b_here', { members: sortedInfos(members) });
        joined();
      });
    });
    a.joining((member) => { emit('joining', { member }); joined(); });
    a.leaving((member) => { emit('leaving', { member }); finish(0); });
  },
};

const scenario = scenarios[process.argv[2]];
if (!scenario) {
  emit('error', { message: 'unknown scenario ' + process.argv[2] });
  process.exit(64);
}
// the package's "import" entry (exports['.'].import), found beside what require resolves
// through NODE_PATH (an ES import ignores NODE_PATH)
function echoModuleUrl() {
  const fs = require('fs');
  const path = require('path');
  const { pathToFileURL } = require('url');
  const dir = path.resolve(path.dirname(require.resolve('laravel-echo')), '..');
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  return pathToFileURL(path.join(dir, manifest.exports['.'].import)).href;
}

import(echoModuleUrl()).then((module) => {
  Echo = module.default;
  scenario();
}, (error) => { emit('error', { message: String(error) }); process.exit(1); });
