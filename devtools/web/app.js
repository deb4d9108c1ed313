// The local demo page: a dev token, the API Gateway WebSocket and Pusher Channels (pusher-js),
// with everything that arrives listed live. Served by devtools/stack.py; never deployed.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const state = { config: null, token: null, sub: null, ws: null, pusher: null };

  // Every arrival becomes one <li data-transport="websocket|pusher|error" data-event="...">.
  function log(transport, event, detail) {
    const item = document.createElement('li');
    item.dataset.transport = transport;
    item.dataset.event = event;
    const tag = document.createElement('span');
    tag.className = 'tag';
    tag.textContent = transport;
    const text = document.createElement('span');
    text.textContent = ` ${event} ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`;
    item.append(tag, text);
    $('log').prepend(item);
  }

  function setStatus(id, value) {
    $(id).textContent = value;
    $(id).dataset.state = value;
  }

  function subjectOf(token) {
    const payload = token.split('.')[1] || '';
    const json = atob(payload.replace(/-/g, '+').replace(/_/g, '/'));
    const claims = JSON.parse(json);
    if (typeof claims.sub !== 'string') throw new Error('the token has no sub');
    return claims.sub;
  }

  // --- API Gateway WebSocket ----------------------------------------------------------------
  function openWebSocket() {
    if (state.ws) state.ws.close(1000);
    const url = `${state.config.websocketUrl}?token=${encodeURIComponent(state.token)}`;
    const ws = new WebSocket(url);
    state.ws = ws;
    setStatus('ws-status', 'connecting');
    ws.onopen = () => {
      setStatus('ws-status', 'open');
      ws.send(JSON.stringify({ action: 'subscribe', channel: `private-user-${state.sub}` }));
      $('ping').disabled = false;
    };
    ws.onmessage = (message) => {
      let frame;
      try { frame = JSON.parse(message.data); } catch (e) { frame = { type: 'text', data: message.data }; }
      const name = frame.type === 'event' ? frame.event : frame.type;
      log(frame.type === 'error' ? 'error' : 'websocket', name || 'message', frame);
    };
    ws.onclose = (close) => {
      if (state.ws === ws) setStatus('ws-status', 'closed');
      log('websocket', 'closed', `code ${close.code}`);
    };
    ws.onerror = () => setStatus('ws-status', 'error');
  }

  // --- Pusher Channels --------------------------------------------------------------------------
  function openPusher() {
    if (state.pusher) state.pusher.disconnect();
    const cfg = state.config;
    const headers = { Authorization: `Bearer ${state.token}` };
    const pusher = new Pusher(cfg.pusher.key, {
      cluster: cfg.pusher.cluster,
      wsHost: cfg.pusher.host,
      wsPort: cfg.pusher.port,
      forceTLS: false,
      enabledTransports: ['ws'],
      disableStats: true,
      channelAuthorization: { endpoint: `${cfg.httpUrl}/pusher/auth`, transport: 'ajax', headers },
      userAuthentication: { endpoint: `${cfg.httpUrl}/pusher/user-auth`, transport: 'ajax', headers },
    });
    state.pusher = pusher;
    pusher.connection.bind('state_change', (s) => setStatus('pusher-status', s.current));
    const names = [`private-user-${state.sub}`, 'presence-lobby'];
    for (const name of names) {
      const channel = pusher.subscribe(name);
      channel.bind('pusher:subscription_succeeded', () => {
        log('pusher', 'subscribed', name);
        showChannels();
        if (name.startsWith('presence-')) showMembers(channel);
      });
      channel.bind('pusher:subscription_error', (error) => log('error', 'subscription_error', { channel: name, status: error.status }));
      channel.bind('pusher:member_added', () => showMembers(channel));
      channel.bind('pusher:member_removed', () => showMembers(channel));
      channel.bind_global((event, data) => {
        if (!event.startsWith('pusher:') && !event.startsWith('pusher_internal:')) {
          log('pusher', event, { channel: name, data });
        }
      });
    }
  }

  function showChannels() {
    const subscribed = state.pusher.allChannels().filter((c) => c.subscribed).map((c) => c.name);
    $('channels').textContent = [`ws: private-user-${state.sub}`, ...subscribed.map((n) => `pusher: ${n}`)].join(', ');
  }

  function showMembers(channel) {
    const members = [];
    channel.members.each((m) => members.push((m.info && m.info.name) || m.id));
    $('members').textContent = members.join(', ') || '—';
  }

  // --- sign-in and buttons ------------------------------------------------------------------------
  function connectWith(token) {
    try {
      state.sub = subjectOf(token);
    } catch (e) {
      log('error', 'bad token', e.message);
      return;
    }
    state.token = token;
    $('who').textContent = `signed in as ${state.sub}`;
    $('notify').disabled = false;
    openWebSocket();
    openPusher();
  }

  $('signin-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const query = new URLSearchParams({ sub: $('sub').value.trim(), name: $('name').value.trim() });
    const response = await fetch(`/dev-token?${query}`);
    const body = await response.json();
    connectWith(body.token);
  });

  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    connectWith($('token').value.trim());
  });

  $('notify').addEventListener('click', async () => {
    const response = await fetch(`${state.config.httpUrl}/notifications`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${state.token}` },
      body: JSON.stringify({ user_id: state.sub, event: 'hello', data: { at: new Date().toISOString() } }),
    });
    log(response.ok ? 'http' : 'error', 'POST /notifications', `HTTP ${response.status}`);
  });

  $('ping').addEventListener('click', () => state.ws.send(JSON.stringify({ action: 'ping' })));

  fetch('/config.json').then((r) => r.json()).then((config) => {
    state.config = config;
    document.body.dataset.ready = 'true';
  });
})();
