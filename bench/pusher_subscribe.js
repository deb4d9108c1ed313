// pusher-js 8 (Node build) against our WebSocket API: channel.subscribe() ->
// 'pusher:subscription_succeeded', sequential, for a public, a private and a presence channel
// kind (a fresh client per kind). Private and presence subscriptions are signed here with the
// app secret, as our /pusher/auth signs them (HMAC-SHA256 of socket_id:channel[:channel_data];
// Pusher docs, "Authentication and authorization signatures"), through pusher-js's
// channelAuthorization.customHandler, so the figure is the socket round trip only.
// env: PUSHER_KEY, PUSHER_SECRET, WS_PORT, COUNT (subscribes per kind), KINDS (comma list).
// stdout: one line per kind {"step": "times", "kind", "ms": [...]}, then {"step": "done"}.
// Run with NODE_PATH=devtools/node/node_modules. A watchdog exits with status 2 after 120 s.
'use strict';

const crypto = require('crypto');
const Pusher = require('pusher-js');

const env = process.env;
const COUNT = Number(env.COUNT || 30);
const KINDS = (env.KINDS || 'public,private,presence').split(',');
const PREFIX = { public: 'bench-js-', private: 'private-bench-js-', presence: 'presence-bench-js-' };

const watchdog = setTimeout(() => {
  process.stdout.write(JSON.stringify({ step: 'timeout' }) + '\n');
  process.exit(2);
}, 120000);
watchdog.unref();

function sign(text) {
  return env.PUSHER_KEY + ':' + crypto.createHmac('sha256', env.PUSHER_SECRET).update(text).digest('hex');
}

function authorize(params, callback) {
  const { socketId, channelName } = params;
  if (channelName.startsWith('presence-')) {
    const channelData = JSON.stringify({ user_id: 'bench-js', user_info: { name: 'Bench' } });
    callback(null, { auth: sign(`${socketId}:${channelName}:${channelData}`), channel_data: channelData });
  } else {
    callback(null, { auth: sign(`${socketId}:${channelName}`) });
  }
}

function client() {
  return new Pusher(env.PUSHER_KEY, {
    cluster: 'mt1', wsHost: '127.0.0.1', wsPort: Number(env.WS_PORT), forceTLS: false,
    enabledTransports: ['ws'], disableStats: true,
    channelAuthorization: { customHandler: authorize },
  });
}

function runKind(kind) {
  return new Promise((resolve, reject) => {
    const pusher = client();
    const times = [];
    let n = 0;
    const next = () => {
      if (n === COUNT + 3) { pusher.disconnect(); resolve(times); return; }
      const name = PREFIX[kind] + n;
      const warm = n < 3; // the first subscribes load the handler's code paths
      n += 1;
      const started = process.hrtime.bigint();
      const channel = pusher.subscribe(name);
      channel.bind('pusher:subscription_succeeded', () => {
        if (!warm) times.push(Number(process.hrtime.bigint() - started) / 1e6);
        setTimeout(next, 5);
      });
      channel.bind('pusher:subscription_error', (error) => reject(new Error(JSON.stringify(error))));
    };
    pusher.connection.bind('connected', next);
  });
}

(async () => {
  for (const kind of KINDS) {
    const ms = await runKind(kind);
    process.stdout.write(JSON.stringify({ step: 'times', kind, ms }) + '\n');
  }
  process.stdout.write(JSON.stringify({ step: 'done' }) + '\n');
  process.exit(0);
})().catch((error) => {
  process.stdout.write(JSON.stringify({ step: 'error', message: String(error) }) + '\n');
  process.exit(1);
});
