// pusher-js 8.x web build inside jsdom, authorizing through our JSONP route:
// channelAuthorization.transport = 'jsonp' adds <script src="/pusher/auth?callback=Pusher.auth_callbacks['N']&...">
// to the page; jsdom fetches and runs it, which subscribes the channel on soketi.
// Environment: PUSHER_KEY, WS_PORT, AUTH_BASE, TOKEN_ALICE. Prints JSON lines like client.js.
'use strict';

const fs = require('fs');
const { JSDOM, VirtualConsole } = require('jsdom');

const env = process.env;
let window = null;
const { emit, finish, clients } = require('../../support/scenario.js')
  .scenario({ timeoutMs: 20000, onFinish: () => window.close() });

const virtualConsole = new VirtualConsole();
virtualConsole.on('jsdomError', (error) => emit('jsdom_error', { message: String(error.message || error) }));

const dom = new JSDOM('<!doctype html><html><head></head><body></body></html>', {
  url: env.AUTH_BASE + '/app.html',
  runScripts: 'dangerously',
  resources: 'usable',
  virtualConsole,
});
window = dom.window;

window.eval(fs.readFileSync(require.resolve('pusher-js/dist/web/pusher.js'), 'utf8'));
const Pusher = window.Pusher;
emit('loaded', { version: Pusher.VERSION, websocket: typeof window.WebSocket });

const pusher = new Pusher(env.PUSHER_KEY, {
  cluster: 'mt1',
  wsHost: '127.0.0.1',
  wsPort: Number(env.WS_PORT),
  forceTLS: false,
  enabledTransports: ['ws'],
  disableStats: true,
  channelAuthorization: {
    endpoint: env.AUTH_BASE + '/pusher/auth',
    transport: 'jsonp',
    params: { token: env.TOKEN_ALICE },
  },
});
clients.push(pusher);
const channel = pusher.subscribe('private-user-alice');
channel.bind('pusher:subscription_succeeded', () => {
  const scripts = Array.from(window.document.querySelectorAll('script')).map((s) => s.src.split('?')[0]);
  emit('ready', { channel: channel.name, auth_callbacks: Object.keys(Pusher.auth_callbacks), scripts });
});
channel.bind('pusher:subscription_error', (error) => { emit('subscription_error', { error }); finish(1); });
channel.bind('greet', (data) => { emit('received', { event: 'greet', data }); finish(0); });
