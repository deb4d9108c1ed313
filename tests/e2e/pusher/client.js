// pusher-js 8.x (Node build) against soketi, authorized by our endpoints under `chalice local`.
// Usage: node client.js <scenario>. Configuration from the environment:
//   PUSHER_KEY, WS_PORT (soketi on 127.0.0.1), AUTH_BASE (http://127.0.0.1:<chalice local>),
//   TOKEN_ALICE, TOKEN_BOB (dev issuer JWTs).
// Prints one JSON object per line on stdout: {"step": ...}. The driving test (Python) waits for
// "ready" lines, triggers through the Python pusher library, and reads what the client received.
// Every scenario ends by itself: a watchdog exits with status 2 after SCENARIO_TIMEOUT_MS.
'use strict';

const Pusher = require('pusher-js');
const PusherBatchAuthorizer = require('pusher-js-auth');

const env = process.env;
// finish() lets the disconnects reach soketi (member_removed / channel_vacated webhooks)
const { emit, finish, clients } = require('../../support/scenario.js')
  .scenario({ timeoutMs: 20000, graceMs: 200 });

function connect(token, extra) {
  const headers = { Authorization: 'Bearer ' + token };
  const options = Object.assign({
    cluster: 'mt1',
    wsHost: '127.0.0.1',
    wsPort: Number(env.WS_PORT),
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    channelAuthorization: { endpoint: env.AUTH_BASE + '/pusher/auth', transport: 'ajax', headers },
    userAuthentication: { endpoint: env.AUTH_BASE + '/pusher/user-auth', transport: 'ajax', headers },
  }, extra || {});
  // pusher-js 8 only honours the deprecated `authorizer` option (pusher-js-auth) when no
  // `channelAuthorization` is given (src/core/config.ts, buildChannelAuth)
  if (options.authorizer) delete options.channelAuthorization;
  const client = new Pusher(env.PUSHER_KEY, options);
  clients.push(client);
  return client;
}

function membersOf(channel) {
  const members = [];
  channel.members.each((member) => members.push({ id: member.id, info: member.info }));
  members.sort((a, b) => (a.id < b.id ? -1 : 1));
  return members;
}

const scenarios = {
  // private channel; the test triggers "greet" through the Python library
  private() {
    const channel = connect(env.TOKEN_ALICE).subscribe('private-user-alice');
    channel.bind('pusher:subscription_succeeded', () => emit('ready', { channel: channel.name }));
    channel.bind('pusher:subscription_error', (error) => { emit('subscription_error', { error }); finish(1); });
    channel.bind('greet', (data) => { emit('received', { event: 'greet', data }); finish(0); });
  },

  // presence: bob joins after alice; bob's member list and alice's member_added
  presence() {
    const room = env.PRESENCE_ROOM || 'presence-lobby';
    let pending = 2; // bob's subscription and alice's member_added, in either order
    const done = () => { pending -= 1; if (pending === 0) finish(0); };
    const alice = connect(env.TOKEN_ALICE).subscribe(room);
    alice.bind('pusher:subscription_succeeded', () => {
      emit('alice_subscribed', { me: alice.members.me, members: membersOf(alice) });
      const bob = connect(env.TOKEN_BOB).subscribe(room);
      bob.bind('pusher:subscription_succeeded', () => {
        emit('bob_subscribed', { me: bob.members.me, members: membersOf(bob), count: bob.members.count });
        done();
      });
      bob.bind('pusher:subscription_error', (error) => { emit('subscription_error', { error }); finish(1); });
    });
    alice.bind('pusher:member_added', (member) => {
      emit('alice_saw_member_added', { id: member.id, info: member.info });
      done();
    });
    alice.bind('pusher:subscription_error', (error) => { emit('subscription_error', { error }); finish(1); });
  },

  // private-encrypted: the test triggers "secret"; the client decrypts with the shared secret
  encrypted() {
    const channel = connect(env.TOKEN_ALICE).subscribe('private-encrypted-user-alice');
    channel.bind('pusher:subscription_succeeded', () => emit('ready', { channel: channel.name }));
    channel.bind('pusher:subscription_error', (error) => { emit('subscription_error', { error }); finish(1); });
    channel.bind('secret', (data) => { emit('received', { event: 'secret', data }); finish(0); });
  },

  // user authentication: signin, then the test calls send_to_user
  signin() {
    const client = connect(env.TOKEN_ALICE);
    client.user.bind('greeting', (data) => { emit('received', { event: 'greeting', data }); finish(0); });
    client.bind('pusher:signin_success', (data) => {
      emit('ready', { user_data: JSON.parse(data.user_data) });
    });
    client.bind('pusher:error', (error) => { emit('pusher_error', { error }); });
    client.signin();
  },

  // a channel the rules refuse: pusher:subscription_error with status 403
  denied() {
    const channel = connect(env.TOKEN_ALICE).subscribe('private-user-bob');
    channel.bind('pusher:subscription_succeeded', () => { emit('subscribed'); finish(1); });
    channel.bind('pusher:subscription_error', (error) => {
      emit('subscription_error', { status: error.status, type: error.type });
      finish(0);
    });
  },

  // pusher-js-auth 4.x: one HTTP request for several channels, each judged on its own
  batch() {
    const client = connect(env.TOKEN_ALICE, {
      authorizer: PusherBatchAuthorizer,
      authEndpoint: env.AUTH_BASE + '/pusher/auth',
      auth: { headers: { Authorization: 'Bearer ' + env.TOKEN_ALICE } },
      authDelay: 100,
    });
    // observe (not alter) the auth requests pusher-js-auth makes through pusher-js's runtime
    const requests = [];
    const runtime = Pusher.Runtime;
    const createXHR = runtime.createXHR;
    runtime.createXHR = function () {
      const xhr = createXHR.apply(this, arguments);
      const record = {};
      requests.push(record);
      const send = xhr.send;
      xhr.send = function (body) { record.body = body; return send.apply(this, arguments); };
      xhr.addEventListener('load', () => { record.status = xhr.status; record.response = xhr.responseText; });
      return xhr;
    };
    const names = ['private-user-alice', 'presence-batch', 'private-user-bob'];
    const outcome = {};
    const settle = (name, result) => {
      outcome[name] = result;
      if (Object.keys(outcome).length === names.length) {
        emit('outcome', { outcome, requests });
        finish(0);
      }
    };
    for (const name of names) {
      const channel = client.subscribe(name);
      channel.bind('pusher:subscription_succeeded', () => settle(name, 'subscribed'));
      // pusher-js 8 drops the per-channel status pusher-js-auth reports (its callback gets
      // `true`, not an HTTPAuthError), so the error carries only its type
      channel.bind('pusher:subscription_error', (error) => settle(name, { error }));
    }
  },
};

const scenario = scenarios[process.argv[2]];
if (!scenario) {
  emit('unknown_scenario', { name: process.argv[2] });
  process.exit(64);
}
scenario();
