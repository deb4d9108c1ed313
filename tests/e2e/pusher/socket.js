// pusher-js 8.x (Node build) against OUR WebSocket API (the local gateway of devtools.stack,
// Pusher protocol 7 dialect): no soketi involved.
// Usage: node socket.js <scenario>. Configuration from the environment:
//   PUSHER_KEY, WS_PORT (the local gateway on 127.0.0.1), AUTH_BASE (our HTTP API),
//   TOKEN_ALICE (a dev issuer JWT), CHANNEL (public channel name), CONNECTS (timing scenario).
// Prints one JSON object per line on stdout: {"step": ...}. The driving test (Python) waits for
// "ready" lines, pushes through POST /notifications or the SQS queue, and reads what arrived.
// Every scenario ends by itself: a watchdog exits with status 2 after SCENARIO_TIMEOUT_MS.
'use strict';

const Pusher = require('pusher-js');

const env = process.env;
const { emit, finish, clients } = require('../../support/scenario.js')
  .scenario({ timeoutMs: 20000 });

function connect(key, extra) {
  const headers = { Authorization: 'Bearer ' + (env.TOKEN_ALICE || '') };
  const client = new Pusher(key || env.PUSHER_KEY, Object.assign({
    cluster: 'mt1',
    wsHost: '127.0.0.1',
    wsPort: Number(env.WS_PORT),
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    channelAuthorization: { endpoint: env.AUTH_BASE + '/pusher/auth', transport: 'ajax', headers },
  }, extra || {}));
  clients.push(client);
  return client;
}

function subscribeAndWait(client, name) {
  const channel = client.subscribe(name);
  channel.bind('pusher:subscription_succeeded', () =>
    emit('ready', { channel: name, socket_id: client.connection.socket_id }));
  channel.bind('pusher:subscription_error', (error) => { emit('subscription_error', { error }); finish(1); });
  channel.bind('greet', (data, metadata) => {
    emit('received', { event: 'greet', channel: name, data, metadata });
    finish(0);
  });
}

const scenarios = {
  // a public channel; the test pushes "greet" through POST /notifications
  public() {
    subscribeAndWait(connect(), env.CHANNEL || 'news');
  },

  // a private channel authorized by our /pusher/auth; the test pushes through the SQS queue
  private() {
    subscribeAndWait(connect(), 'private-user-alice');
  },

  // a signature the server must refuse: pusher:subscription_error with status 401
  badsig() {
    const client = connect(null, {
      channelAuthorization: {
        customHandler: (params, callback) =>
          callback(null, { auth: env.PUSHER_KEY + ':' + '0'.repeat(64) }),
      },
    });
    const channel = client.subscribe('private-user-alice');
    channel.bind('pusher:subscription_succeeded', () => { emit('subscribed'); finish(1); });
    channel.bind('pusher:subscription_error', (error) => { emit('subscription_error', { error }); finish(0); });
  },

  // an app key the server does not serve: pusher:error 4001, and pusher-js gives up
  badkey() {
    const client = connect('no-such-key');
    const states = [];
    client.connection.bind('state_change', (change) => states.push(change.current));
    client.connection.bind('connected', () => { emit('connected'); finish(1); });
    client.connection.bind('error', (error) => {
      emit('error', { type: error.type, code: error.error && error.error.data && error.error.data.code,
                      message: error.error && error.error.data && error.error.data.message });
      setTimeout(() => { emit('states', { states }); finish(0); }, 300);
    });
  },

  // presence through our /pusher/auth: bob joins after alice, then leaves by a dropped socket
  presence() {
    const room = env.PRESENCE_ROOM || 'presence-lobby';
    const alice = connect(null);
    const aliceRoom = alice.subscribe(room);
    aliceRoom.bind('pusher:subscription_error', (error) => { emit('subscription_error', { error }); finish(1); });
    aliceRoom.bind('pusher:member_added', (member) => emit('member_added', { id: member.id, info: member.info }));
    aliceRoom.bind('pusher:member_removed', (member) => {
      emit('member_removed', { id: member.id, count: aliceRoom.members.count });
      finish(0);
    });
    aliceRoom.bind('pusher:subscription_succeeded', (members) => {
      emit('alice_subscribed', { me: members.me, count: members.count });
      const bob = connect(null, { channelAuthorization: {
        endpoint: env.AUTH_BASE + '/pusher/auth', transport: 'ajax',
        headers: { Authorization: 'Bearer ' + env.TOKEN_BOB } } });
      const bobRoom = bob.subscribe(room);
      bobRoom.bind('pusher:subscription_succeeded', (bobMembers) => {
        const ids = [];
        bobMembers.each((member) => ids.push(member.id));
        emit('bob_subscribed', { me: bobMembers.me, ids: ids.sort(), count: bobMembers.count });
        // the socket closes without an unsubscribe: $disconnect must remove the member
        setTimeout(() => bob.disconnect(), 100);
      });
    });
  },

  // client events: alice whispers on a presence room; bob receives it with her user_id,
  // alice never gets her own event back
  whisper() {
    const room = env.PRESENCE_ROOM || 'presence-whisper';
    const alice = connect(null);
    const bob = connect(null, { channelAuthorization: {
      endpoint: env.AUTH_BASE + '/pusher/auth', transport: 'ajax',
      headers: { Authorization: 'Bearer ' + env.TOKEN_BOB } } });
    const bobRoom = bob.subscribe(room);
    bobRoom.bind('client-typing', (data, metadata) => {
      emit('received', { data, user_id: metadata && metadata.user_id });
      finish(0);
    });
    bobRoom.bind('pusher:subscription_succeeded', () => {
      const aliceRoom = alice.subscribe(room);
      aliceRoom.bind('client-typing', () => { emit('echoed'); finish(1); });
      aliceRoom.bind('pusher:subscription_succeeded', () => {
        emit('sent', { ok: aliceRoom.trigger('client-typing', { typing: true }) });
      });
    });
  },

  // sign-in through our /pusher/user-auth, then the test pushes to the user
  signin() {
    const client = connect(null, { userAuthentication: {
      endpoint: env.AUTH_BASE + '/pusher/user-auth', transport: 'ajax',
      headers: { Authorization: 'Bearer ' + env.TOKEN_ALICE } } });
    client.signin();
    client.user.signinDonePromise.then(() => {
      if (!client.user.user_data) { emit('signin_failed'); finish(1); return; }
      // the user channel (#server-to-user-<id>) is subscribed right after signin_success
      setTimeout(() => emit('ready', { id: client.user.user_data.id }), 300);
    });
    client.user.bind('greet', (data) => { emit('received', { data }); finish(0); });
  },

  // an end-to-end encrypted channel: our /pusher/auth gives the shared secret, the server
  // library encrypts, our server relays, pusher-js decrypts
  encrypted() {
    subscribeAndWait(connect(), 'private-encrypted-user-alice');
  },

  // a cache channel: the first subscriber gets pusher:cache_miss; after the test's push a
  // second client subscribing gets the cached event at once
  cache() {
    const name = env.CHANNEL;
    const first = connect().subscribe(name);
    first.bind('pusher:cache_miss', () => emit('cache_miss'));
    first.bind('greet', (data) => {
      emit('first_received', { data });
      const second = connect().subscribe(name);
      second.bind('pusher:cache_miss', () => { emit('unexpected_miss'); finish(1); });
      second.bind('greet', (cached) => { emit('received', { data: cached }); finish(0); });
    });
  },

  // sequential connects: ms from `new Pusher` to "connected" (TCP + handshake + authorizer
  // + $connect + pusher_hello's first frame)
  timing() {
    const total = Number(env.CONNECTS || 20);
    const times = [];
    const next = () => {
      if (times.length === total) { emit('times', { ms: times }); finish(0); return; }
      const started = process.hrtime.bigint();
      const client = connect();
      client.connection.bind('connected', () => {
        times.push(Number(process.hrtime.bigint() - started) / 1e6);
        client.disconnect();
        setTimeout(next, 20);
      });
    };
    next();
  },
};

const scenario = scenarios[process.argv[2]];
if (!scenario) {
  emit('unknown_scenario', { name: process.argv[2] });
  process.exit(3);
}
scenario();
