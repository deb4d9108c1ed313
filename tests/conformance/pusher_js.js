// pusher-js 8 (Node build, devtools/node) scenarios for the conformance suite: the SAME code runs
// against soketi and against our WebSocket API; only the environment differs.
// Usage: node pusher_js.js <scenario>. Configuration, from the environment only:
//   PUSHER_KEY, WS_HOST, WS_PORT (where pusher-js connects), AUTH_BASE (the app's REST API:
//   /pusher/auth, /pusher/user-auth) — all from Server.client_env(); TOKEN_ALICE, TOKEN_BOB
//   (dev issuer JWTs for the auth endpoints); CHANNEL / ROOM (channel names), COUNT, LEAVE, WAIT_MARKER.
// Prints one JSON object per line on stdout: {"step": ...}. The driving test
// (tests/conformance/test_pusher_js.py) reads the lines, acts server-side with the Python pusher
// library, and asserts. Every scenario ends by itself: a watchdog prints {"step": "timeout"} and
// exits with status 2 after SCENARIO_TIMEOUT_MS.
'use strict';

const Pusher = require('pusher-js');

const env = process.env;
const { emit, finish, clients } = require('../support/scenario.js')
  .scenario({ timeoutMs: 15000, graceMs: 100 });

function bearer(token) {
  return { Authorization: 'Bearer ' + (token || '') };
}

// a pusher-js client as an app configures it for either server: only host and port differ
function connect(options) {
  const opts = options || {};
  const headers = bearer(opts.token || env.TOKEN_ALICE);
  const client = new Pusher(opts.key || env.PUSHER_KEY, Object.assign({
    cluster: 'mt1',
    wsHost: env.WS_HOST,
    wsPort: Number(env.WS_PORT),
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    // pusher-js pings after min(this, the server's activity_timeout): large, so the socket's
    // activity timeout shows what the server asked for
    activityTimeout: 600000,
    channelAuthorization: { endpoint: env.AUTH_BASE + '/pusher/auth', transport: 'ajax', headers },
    userAuthentication: { endpoint: env.AUTH_BASE + '/pusher/user-auth', transport: 'ajax',
                          headers },
  }, opts.extra || {}));
  clients.push(client);
  return client;
}

function pusherError(error) {
  const data = (error && error.data) || (error && error.error && error.error.data) || {};
  return { type: error && error.type, code: data.code, message: data.message };
}

// every state change and pusher:error of a client, as lines
function watch(client, name) {
  client.connection.bind('state_change', (change) =>
    emit('state', { client: name, previous: change.previous, current: change.current,
                    socket_id: client.connection.socket_id }));
  client.connection.bind('error', (error) => emit('error', Object.assign(
    { client: name, t: Date.now() }, pusherError(error))));
}

function onSubscribed(channel, callback) {
  channel.bind('pusher:subscription_succeeded', callback);
  channel.bind('pusher:subscription_error', (error) => {
    emit('subscription_error', { channel: channel.name, error });
  });
}

function members(list) {
  const ids = [];
  list.each((member) => ids.push(member.id));
  return { ids: ids.sort(), count: list.count, me: list.me };
}

const scenarios = {
  // pusher:connection_established (socket_id, activity_timeout), then pusher:ping -> pusher:pong
  connect() {
    const client = connect();
    client.connection.bind('connected', () => {
      emit('connected', { socket_id: client.connection.socket_id,
                          activity_timeout_ms: client.connection.activityTimeout });
      client.connection.bind('message', (message) => {
        if (message.event === 'pusher:pong') { emit('pong'); finish(0); }
      });
      client.send_event('pusher:ping', {});
    });
  },

  // a public (CHANNEL) or private (CHANNEL=private-user-alice) channel: "ready" once
  // subscribed, then every "greet" the test triggers
  subscribe() {
    const client = connect();
    const channel = client.subscribe(env.CHANNEL);
    onSubscribed(channel, () => emit('ready', { socket_id: client.connection.socket_id }));
    channel.bind('greet', (data) => {
      emit('received', { data, channel: channel.name });
      finish(0);
    });
  },

  // presence: alice watches ROOM (member list, member_added, member_removed) until the test ends
  presence_watch() {
    const client = connect();
    const room = client.subscribe(env.ROOM);
    onSubscribed(room, (list) => emit('subscribed', members(list)));
    room.bind('pusher:member_added', (member) =>
      emit('member_added', { id: member.id, info: member.info, count: room.members.count }));
    room.bind('pusher:member_removed', (member) =>
      emit('member_removed', { id: member.id, count: room.members.count }));
  },

  // presence: bob joins ROOM; LEAVE=unsubscribe leaves cleanly, else he stays until killed
  presence_join() {
    const client = connect({ token: env.TOKEN_BOB });
    const room = client.subscribe(env.ROOM);
    onSubscribed(room, (list) => {
      emit('subscribed', members(list));
      if (env.LEAVE === 'unsubscribe') {
        client.unsubscribe(env.ROOM);
        emit('unsubscribed');
      }
    });
  },

  // client events on CHANNEL (a presence room, or a public channel): alice and bob subscribe,
  // alice triggers COUNT client events in a burst; lines: what bob received, what alice got
  // back (her own events echoed, pusher:error), then "done" once nothing is outstanding;
// with WAIT_MARKER, alice then waits for a "greet" the test triggers ("marker")
  client_events() {
    const total = Number(env.COUNT || 1);
    const alice = connect();
    const bob = connect({ token: env.TOKEN_BOB });
    watch(alice, 'alice');
    let received = 0;
    let errors = 0;
    const settle = () => {
      if (received + errors === total) {
        emit('done', { received, errors });
        if (!env.WAIT_MARKER) finish(0);
      }
    };
    alice.connection.bind('error', (error) => {
      if (error.type === 'PusherError') { errors += 1; settle(); }
    });
    const bobChannel = bob.subscribe(env.CHANNEL);
    bobChannel.bind('client-note', (data, metadata) => {
      received += 1;
      emit('received', { data, user_id: metadata && metadata.user_id, t: Date.now() });
      settle();
    });
    onSubscribed(bobChannel, () => {
      const aliceChannel = alice.subscribe(env.CHANNEL);
      aliceChannel.bind('client-note', (data) => emit('echoed', { data }));
      aliceChannel.bind('greet', (data) => { emit('marker', { data }); finish(0); });
      onSubscribed(aliceChannel, () => {
        const results = [];
        for (let n = 0; n < total; n += 1) {
          results.push(aliceChannel.trigger('client-note', { n }));
        }
        emit('sent', { count: total, accepted: results.filter(Boolean).length });
      });
    });
  },

  // an end-to-end encrypted channel: our /pusher/auth gives the shared secret, the server
  // library encrypts, the server relays, pusher-js decrypts
  encrypted() {
    scenarios.subscribe();
  },

  // pusher:signin through our /pusher/user-auth; "ready" once the user channel is subscribed;
  // the test sends to the user, or terminates the user's connections (then: states, errors)
  signin() {
    const client = connect();
    watch(client, 'alice');
    client.signin();
    client.user.signinDonePromise.then(() => {
      if (!client.user.user_data) { emit('signin_failed'); return; }
      client.user.serverToUserChannel.bind('pusher:subscription_succeeded', () =>
        emit('ready', { id: client.user.user_data.id, socket_id: client.connection.socket_id }));
    });
    client.user.bind('greet', (data) => emit('received', { data }));
  },

  // pusher:signin with a signature the server must refuse (pusher:error 4009); 1.5 s later
  // (pusher-js retries a closed socket after 1 s), is the socket still there and usable?
  bad_signin() {
    const client = connect({ extra: { userAuthentication: {
      customHandler: (params, callback) => callback(null, {
        auth: env.PUSHER_KEY + ':' + '0'.repeat(64), user_data: JSON.stringify({ id: 'alice' }),
      }),
    } } });
    watch(client, 'alice');
    let judged = false;
    client.connection.bind('error', () => {
      if (judged) return;
      judged = true;
      setTimeout(() => {
        const state = client.connection.state;
        emit('after', { state, socket_id: client.connection.socket_id });
        if (state !== 'connected') { finish(0); return; }
        client.connection.bind('message', (message) => {
          if (message.event === 'pusher:pong') { emit('pong'); finish(0); }
        });
        client.send_event('pusher:ping', {});
      }, 1500);
    });
    client.user.bind('pusher:signin_success', () => emit('signin_success'));
    client.signin();
  },

  // cache channel CHANNEL: the first subscriber gets pusher:cache_miss; after the test's
  // trigger a second client subscribing gets the last event at once
  cache() {
    const first = connect().subscribe(env.CHANNEL);
    first.bind('pusher:cache_miss', () => emit('cache_miss'));
    first.bind('greet', (data) => {
      emit('first_received', { data });
      const second = connect().subscribe(env.CHANNEL);
      second.bind('pusher:cache_miss', () => { emit('second_cache_miss'); finish(1); });
      second.bind('greet', (cached) => { emit('cached', { data: cached }); finish(0); });
    });
  },

  // two subscribers of CHANNEL: A's socket_id is excluded from the test's first trigger, the
  // second trigger reaches both; each client reports what it got, in order
  exclude() {
    const a = connect();
    const b = connect();
    const got = { a: [], b: [] };
    let ready = 0;
    for (const [name, client] of [['a', a], ['b', b]]) {
      const channel = client.subscribe(env.CHANNEL);
      onSubscribed(channel, () => {
        ready += 1;
        if (ready === 2) emit('ready', { a: a.connection.socket_id, b: b.connection.socket_id });
      });
      channel.bind('greet', (data) => {
        got[name].push(data.n);
        emit('received', { client: name, n: data.n });
        if (got.a.includes(2) && got.b.includes(2)) { emit('done', got); finish(0); }
      });
    }
  },

  // a channel signature the server must refuse: pusher:subscription_error
  bad_signature() {
    const client = connect({ extra: { channelAuthorization: {
      customHandler: (params, callback) =>
        callback(null, { auth: env.PUSHER_KEY + ':' + '0'.repeat(64) }),
    } } });
    const channel = client.subscribe(env.CHANNEL);
    channel.bind('pusher:subscription_succeeded', () => { emit('subscribed'); finish(1); });
    channel.bind('pusher:subscription_error', (error) => {
      emit('subscription_error', { error });
      finish(0);
    });
  },

  // an app key the server does not serve: pusher:error 4001 during the handshake, and pusher-js
  // gives up (no reconnect)
  bad_key() {
    const client = connect({ key: 'no-such-key' });
    watch(client, 'client');
    client.connection.bind('error', () => setTimeout(() => { emit('done'); finish(0); }, 1500));
  },

  // reconnect: subscribed to CHANNEL (public) and private-user-alice; the test cuts the TCP
  // connection (tests/support/cut_proxy.py); pusher-js reconnects and resubscribes both
  reconnect() {
    const client = connect();
    watch(client, 'alice');
    const names = [env.CHANNEL, 'private-user-alice'];
    const subscribed = {};
    for (const name of names) {
      const channel = client.subscribe(name);
      onSubscribed(channel, () => {
        subscribed[name] = (subscribed[name] || 0) + 1;
        const counts = names.map((n) => subscribed[n] || 0);
        if (Math.min(...counts) === 1 && Math.max(...counts) === 1) {
          emit('ready', { socket_id: client.connection.socket_id });
        } else if (Math.min(...counts) === 2) {
          emit('resubscribed', { socket_id: client.connection.socket_id });
        }
      });
      channel.bind('greet', (data) => emit('received', { channel: name, data }));
    }
  },
};

const scenario = scenarios[process.argv[2]];
if (!scenario) {
  emit('unknown_scenario', { name: process.argv[2] });
  process.exit(3);
}
scenario();
