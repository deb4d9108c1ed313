// A stock pusher-js 8 client that counts a stream of numbered events across reconnects: the
// scenario of tests/conformance/test_reconnect.py. Configuration from the environment only:
//   PUSHER_KEY, WS_HOST, WS_PORT, AUTH_BASE, TOKEN (the user's JWT for /pusher/auth and
//   /pusher/user-auth), EVENT (the event name counted), MODE ("channel": subscribe CHANNEL;
//   "user": sign in and count the user's own events, send_to_user).
// Prints {"step": "ready"} once subscribed (signed in), {"step": "resubscribed", "times": n}
// after each reconnect, {"step": "got", "n": <data.n>} per event, in the order pusher-js
// hands them over.
// Runs until the test stops it or SCENARIO_TIMEOUT_MS passes.
'use strict';

const Pusher = require('pusher-js');

const env = process.env;
const { emit, finish, clients } = require('../support/scenario.js')
  .scenario({ timeoutMs: 90000, graceMs: 100 });

const headers = { Authorization: 'Bearer ' + env.TOKEN };
const client = new Pusher(env.PUSHER_KEY, {
  cluster: 'mt1',
  wsHost: env.WS_HOST,
  wsPort: Number(env.WS_PORT),
  forceTLS: false,
  enabledTransports: ['ws'],
  disableStats: true,
  channelAuthorization: { endpoint: env.AUTH_BASE + '/pusher/auth', transport: 'ajax', headers },
  userAuthentication: { endpoint: env.AUTH_BASE + '/pusher/user-auth', transport: 'ajax',
                        headers },
});
clients.push(client);
if (env.MODE === 'user') {
  // the user's own events (send_to_user): pusher-js signs in again after each reconnect and
  // subscribes #server-to-user-<id>; ready / resubscribed count those subscriptions
  client.signin();
  let signins = 0;
  client.connection.bind('message', (message) => {
    if (message.event === 'pusher_internal:subscription_succeeded'
        && String(message.channel).startsWith('#server-to-user-')) {
      signins += 1;
      if (signins === 1) emit('ready', { socket_id: client.connection.socket_id });
      else emit('resubscribed', { times: signins - 1, socket_id: client.connection.socket_id });
    }
  });
  client.user.bind(env.EVENT, (data) => emit('got', { n: data.n }));
} else {
  let subscriptions = 0;
  const channel = client.subscribe(env.CHANNEL);
  channel.bind('pusher:subscription_succeeded', () => {
    subscriptions += 1;
    if (subscriptions === 1) emit('ready', { socket_id: client.connection.socket_id });
    else emit('resubscribed', { times: subscriptions - 1, socket_id: client.connection.socket_id });
  });
  channel.bind('pusher:subscription_error', (error) => emit('subscription_error', { error }));
  channel.bind(env.EVENT, (data) => emit('got', { n: data.n }));
}

module.exports = { finish };  // the test stops the process when it has seen enough
