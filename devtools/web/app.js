// The local demo page: a dev token, the API Gateway WebSocket and Pusher Channels (pusher-js)
// against two Pusher-protocol servers side by side (soketi, and our WebSocket API's Pusher
// dialect), with everything that arrives listed live, and every failure shown on the page
// (#error and a red entry in the list). Served by devtools/stack.py; never deployed.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  // the pusher-js panels, keyed as in /config.json's pusherServers
  const SERVERS = ['soketi', 'ours'];
  const state = { config: null, token: null, sub: null, userId: null, ws: null, pushers: {} };

  // Every arrival becomes one <li data-transport="websocket|pusher|http|error" data-event="...">
  // in `list`: the page's log, or a pusher-js panel's own list of events.
  function log(transport, event, detail, list = $('log')) {
    const item = document.createElement('li');
    item.dataset.transport = transport;
    item.dataset.event = event;
    const tag = document.createElement('span');
    tag.className = 'tag';
    tag.textContent = transport;
    const text = document.createElement('span');
    text.textContent = ` ${event} ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`;
    item.append(tag, text);
    list.prepend(item);
    return item;
  }

  // A failure: listed, and the latest one shown in the #error box under the sign-in form.
  function showError(where, message) {
    log('error', where, message);
    $('error').textContent = `${where}: ${message}`;
    $('error').hidden = false;
  }

  function clearError() {
    $('error').textContent = '';
    $('error').hidden = true;
  }

  function setStatus(id, value) {
    $(id).textContent = value;
    $(id).dataset.state = value;
  }

  // fetch, with every failure turned into one sentence: the HTTP status and the JSON error body
  // ({"error", "message"}), or why the browser gave the page no answer at all.
  async function call(url, options) {
    let response;
    try {
      response = await fetch(url, options);
    } catch (e) {
      throw new Error(`no readable answer (${e.message}): the server is unreachable, or it `
        + 'answered without CORS headers, as API Gateway does for its own errors, such as the '
        + "authorizer's 401 for an invalid or expired token");
    }
    const text = await response.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
    if (!response.ok) {
      const reason = body && typeof body === 'object'
        ? [body.error, body.message].filter((v) => typeof v === 'string').join(': ')
        : text.slice(0, 200);
      throw new Error(`HTTP ${response.status}${reason ? ` ${reason}` : ''}`);
    }
    if (body === null || typeof body !== 'object') {
      throw new Error(`HTTP ${response.status} but the body is not a JSON object`);
    }
    return body;
  }

  // The sub claim of a JWT, read (not verified: the servers verify) to name the user's channel.
  function subjectOf(token) {
    const parts = token.split('.');
    if (parts.length !== 3) throw new Error('the pasted text is not a JWT (three dot-separated parts)');
    let claims;
    try {
      const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
      const bytes = Uint8Array.from(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
      claims = JSON.parse(new TextDecoder().decode(bytes));
    } catch (e) {
      throw new Error('the pasted text is not a JWT (its payload is not base64url JSON)');
    }
    if (!claims || typeof claims.sub !== 'string' || !claims.sub) throw new Error('the token has no sub claim');
    return claims.sub;
  }

  // The user id the server names this user by (docs/auth.md, "User ids"): every character outside
  // A-Z a-z 0-9 _ - @ , . ; becomes =XX per UTF-8 byte. The dev stack trusts one issuer without
  // a user_id_prefix; with one, the id would be `${prefix}.${escaped}`.
  const USER_ID_SAFE = /[A-Za-z0-9_\-@,.;]/;
  function userIdOf(sub) {
    let out = '';
    for (const char of sub) {
      if (USER_ID_SAFE.test(char)) { out += char; continue; }
      for (const byte of new TextEncoder().encode(char)) {
        out += `=${byte.toString(16).toUpperCase().padStart(2, '0')}`;
      }
    }
    return out;
  }

  // --- API Gateway WebSocket ----------------------------------------------------------------
  function openWebSocket() {
    if (state.ws) state.ws.close(1000);
    const url = `${state.config.websocketUrl}?token=${encodeURIComponent(state.token)}`;
    const ws = new WebSocket(url);
    let opened = false;
    state.ws = ws;
    setStatus('ws-status', 'connecting');
    $('ws-channel').textContent = '—';
    $('ping').disabled = true;
    ws.onopen = () => {
      opened = true;
      setStatus('ws-status', 'open');
      ws.send(JSON.stringify({ action: 'subscribe', channel: `private-user-${state.userId}` }));
      $('ping').disabled = false;
    };
    ws.onmessage = (message) => {
      let frame;
      try { frame = JSON.parse(message.data); } catch (e) { frame = { type: 'text', data: message.data }; }
      if (frame.type === 'error') {
        showError('websocket', `error frame ${frame.code}: ${frame.message}`
          + (frame.action ? ` (action ${frame.action})` : ''));
        return;
      }
      if (frame.type === 'subscribed' && typeof frame.channel === 'string') $('ws-channel').textContent = frame.channel;
      log('websocket', (frame.type === 'event' ? frame.event : frame.type) || 'message', frame);
    };
    ws.onclose = (close) => {
      const detail = `code ${close.code}${close.reason ? ` ${close.reason}` : ''}`;
      if (state.ws !== ws) { // replaced by a newer connection
        log('websocket', 'closed', detail);
        return;
      }
      $('ping').disabled = true;
      if (!opened) {
        // Browsers do not tell a page the HTTP status of a refused handshake.
        setStatus('ws-status', 'refused');
        showError('websocket', `the handshake was refused or the gateway is unreachable (${detail}); `
          + 'a refused token (401) or a denied one (403) looks like this');
      } else if (close.code === 1000) {
        setStatus('ws-status', 'closed');
        log('websocket', 'closed', detail);
      } else {
        setStatus('ws-status', 'closed');
        showError('websocket', `closed by the server (${detail}); sign in again to reconnect`);
      }
    };
    // onerror carries no detail; onclose follows with the code and is reported there.
  }

  // --- Pusher Channels: one pusher-js client per server, each in its panel -----------------------
  const panel = (server) => $(`pusher-${server}`);
  const part = (server, name) => panel(server).querySelector(`.${name}`);

  function setPart(server, name, value, dataState) {
    const element = part(server, name);
    element.textContent = value;
    if (dataState !== undefined) element.dataset.state = dataState;
  }

  // An arrival listed in the server's panel (data-server, and data-channel when there is one).
  function panelLog(server, event, detail, channel) {
    const item = log('pusher', event, detail, part(server, 'events'));
    item.dataset.server = server;
    if (channel) item.dataset.channel = channel;
  }

  // Where pusher-js connects: it always appends /app/<key> to wsHost:wsPort.
  function addressOf(server) {
    const cfg = state.config.pusherServers[server];
    return `ws://${cfg.host}:${cfg.port}/app/${cfg.key}`;
  }

  // pusher-js custom channel authorization: the same POST pusher-js's ajax transport sends, but
  // a refusal is shown with its HTTP status and the server's error body. `refused` remembers the
  // channel, so the subscription_error pusher-js then emits is not reported twice.
  function channelAuthorizer(endpoint, token, server, refused) {
    return (params, callback) => {
      const body = new URLSearchParams({ socket_id: params.socketId, channel_name: params.channelName });
      call(endpoint, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded', Authorization: `Bearer ${token}` },
        body,
      }).then((data) => callback(null, data), (e) => {
        refused.add(params.channelName);
        showError('pusher auth', `${params.channelName} (server ${server}): ${e.message}`);
        callback(e, null);
      });
    };
  }

  // pusher-js custom user authentication (pusher.signin()): POST socket_id to our
  // /pusher/user-auth; a refusal is shown like a channel's (pusher-js itself only logs it).
  function userAuthenticator(endpoint, token, server) {
    return (params, callback) => {
      call(endpoint, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded', Authorization: `Bearer ${token}` },
        body: new URLSearchParams({ socket_id: params.socketId }),
      }).then((data) => callback(null, data), (e) => {
        setPart(server, 'user', 'sign-in refused', 'refused');
        showError('pusher user-auth', `server ${server}: ${e.message}`);
        callback(e, null);
      });
    };
  }

  function closePusher(server) {
    const pusher = state.pushers[server];
    state.pushers[server] = null;
    if (pusher) pusher.disconnect();
    setPart(server, 'status', 'disconnected', 'disconnected');
    setPart(server, 'socket-id', '—');
    setPart(server, 'channels', '—');
    setPart(server, 'members', '—');
    setPart(server, 'user', '—', 'idle');
    $(`pusher-${server}-toggle`).textContent = 'Connect';
  }

  // Connect pusher-js to `server`, subscribe the user's private channel and presence-lobby
  // (both signed by our /pusher/auth) and sign the user in (our /pusher/user-auth).
  function openPusher(server) {
    if (state.pushers[server]) closePusher(server);
    const cfg = state.config.pusherServers[server];
    const refused = new Set();
    const pusher = new Pusher(cfg.key, {
      cluster: cfg.cluster,
      wsHost: cfg.host,
      wsPort: cfg.port,
      forceTLS: false,
      enabledTransports: ['ws'],
      disableStats: true,
      channelAuthorization: {
        customHandler: channelAuthorizer(`${state.config.httpUrl}/pusher/auth`, state.token, server, refused),
      },
      userAuthentication: {
        customHandler: userAuthenticator(`${state.config.httpUrl}/pusher/user-auth`, state.token, server),
      },
    });
    state.pushers[server] = pusher;
    const current = () => state.pushers[server] === pusher;
    $(`pusher-${server}-toggle`).textContent = 'Disconnect';
    $(`pusher-${server}-toggle`).disabled = false;
    setPart(server, 'user', '—', 'idle');
    pusher.connection.bind('state_change', (s) => {
      if (!current()) return;
      setPart(server, 'status', s.current, s.current);
      setPart(server, 'socket-id', s.current === 'connected' ? pusher.connection.socket_id : '—');
      if (s.current === 'connected') {
        setPart(server, 'user', 'signing in', 'pending');
      } else {
        setPart(server, 'channels', '—');
        if (part(server, 'user').dataset.state !== 'refused') setPart(server, 'user', '—', 'idle');
      }
      if (s.current === 'unavailable' || s.current === 'failed') {
        showError(`pusher (server ${server})`, `connection ${s.current}: ${addressOf(server)} does not answer`);
      }
    });
    pusher.connection.bind('error', (e) => {
      if (!current()) return;
      const data = e && e.error && e.error.data;
      showError(`pusher (server ${server})`, data && data.message ? `${data.code || ''} ${data.message}`.trim()
        : `connection error ${(e && e.type) || ''}`.trim());
    });
    // user sign-in: pusher-js reads pusher:signin_success first (it binds before this page)
    pusher.connection.bind('message', (message) => {
      if (!current() || message.event !== 'pusher:signin_success') return;
      const user = pusher.user.user_data;
      if (!user) {
        setPart(server, 'user', 'sign-in answer unreadable', 'refused');
        showError(`pusher (server ${server})`, 'pusher:signin_success without a user id in user_data');
        return;
      }
      setPart(server, 'user', `signed in as ${user.id}`, 'signed-in');
      panelLog(server, 'signed-in', user);
    });
    // events pushed to the signed-in user (#server-to-user-<id>: send_to_user, POST /notifications)
    pusher.user.bind_global((event, data) => {
      if (!current() || event.startsWith('pusher:') || event.startsWith('pusher_internal:')) return;
      const channel = pusher.user.serverToUserChannel && pusher.user.serverToUserChannel.name;
      panelLog(server, event, { channel, data }, channel);
    });
    for (const name of [`private-user-${state.userId}`, 'presence-lobby']) {
      const channel = pusher.subscribe(name);
      channel.bind('pusher:subscription_succeeded', () => {
        if (!current()) return;
        panelLog(server, 'subscribed', name, name);
        showChannels(server);
        if (name.startsWith('presence-')) showMembers(server, channel);
      });
      channel.bind('pusher:subscription_error', (error) => {
        if (!current()) return;
        if (refused.delete(name)) return; // shown by channelAuthorizer
        showError(`pusher (server ${server})`, `subscription to ${name} failed: ${JSON.stringify(error)}`);
      });
      for (const change of ['member_added', 'member_removed']) {
        channel.bind(`pusher:${change}`, (member) => {
          if (!current()) return;
          panelLog(server, change, { channel: name, user_id: member.id, user_info: member.info }, name);
          showMembers(server, channel);
        });
      }
      channel.bind_global((event, data) => {
        if (current() && !event.startsWith('pusher:') && !event.startsWith('pusher_internal:')) {
          panelLog(server, event, { channel: name, data }, name);
        }
      });
    }
    pusher.signin();
  }

  function showChannels(server) {
    const subscribed = state.pushers[server].allChannels().filter((c) => c.subscribed).map((c) => c.name);
    setPart(server, 'channels', subscribed.join(', ') || '—');
  }

  function showMembers(server, channel) {
    const members = [];
    channel.members.each((m) => members.push((m.info && m.info.name) || m.id));
    setPart(server, 'members', members.join(', ') || '—');
  }

  // --- sign-in and buttons ------------------------------------------------------------------------
  function connectWith(token) {
    let sub;
    try {
      sub = subjectOf(token);
    } catch (e) {
      showError('token', e.message);
      return;
    }
    clearError();
    state.sub = sub;
    state.userId = userIdOf(sub);
    state.token = token;
    $('who').textContent = `signed in as ${state.sub}`;
    $('notify').disabled = false;
    $('trigger').disabled = false;
    openWebSocket();
    for (const server of SERVERS) {
      part(server, 'events').replaceChildren(); // a new user: the panel's list starts afresh
      openPusher(server);
    }
  }

  $('signin-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const query = new URLSearchParams({ sub: $('sub').value.trim(), name: $('name').value.trim() });
    let body;
    try {
      body = await call(`/dev-token?${query}`);
    } catch (err) {
      showError('dev token', err.message);
      return;
    }
    connectWith(body.token);
  });

  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    connectWith($('token').value.trim());
  });

  $('notify').addEventListener('click', async () => {
    try {
      const summary = await call(`${state.config.httpUrl}/notifications`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${state.token}` },
        body: JSON.stringify({
          user_id: state.userId, event: 'hello', data: { from: 'demo page', at: new Date().toISOString() },
        }),
      });
      log('http', 'POST /notifications', `HTTP 200 delivered ${summary.delivered}, gone ${summary.gone}, `
        + `failed ${summary.failed}, retryable ${summary.retryable}`);
    } catch (e) {
      showError('POST /notifications', e.message);
    }
  });

  // The stack publishes with the Python pusher library (it holds the app secret; the page never
  // does) to soketi and to our Pusher HTTP API: one event on private-user-<id>, one to the user.
  $('trigger').addEventListener('click', async () => {
    try {
      const r = await call('/dev-trigger', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ user_id: state.userId }),
      });
      const servers = Object.entries(r.servers).map(([server, outcome]) => `${server} ${outcome}`);
      log('http', 'POST /dev-trigger', `HTTP 200 id ${r.id}: ${servers.join(', ')} `
        + `(${r.event} on ${r.channel}, ${r.user_event} to user ${r.user_id})`);
    } catch (e) {
      showError('POST /dev-trigger', e.message);
    }
  });

  for (const server of SERVERS) {
    $(`pusher-${server}-toggle`).addEventListener('click', () => {
      if (state.pushers[server]) {
        closePusher(server);
        panelLog(server, 'disconnected', 'by the button');
      } else {
        openPusher(server);
      }
    });
  }

  $('ping').addEventListener('click', () => {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
      showError('websocket', 'not open: sign in first');
      return;
    }
    state.ws.send(JSON.stringify({ action: 'ping' }));
  });

  // --- live figures ------------------------------------------------------------------------------
  // GET /metrics.json of the stack: the EMF documents the functions printed, added up per second
  // (devtools/live_metrics.py). Bars: messages delivered per second; line: open connections.
  function drawChart(snapshot) {
    const canvas = $('chart');
    const ctx = canvas.getContext('2d');
    const { width, height } = canvas;
    const rates = snapshot.messages_per_second;
    const open = snapshot.open_connections;
    const top = Math.max(1, ...rates, ...open);
    const step = width / rates.length;
    ctx.clearRect(0, 0, width, height);
    ctx.fillStyle = '#79b8ff';
    rates.forEach((n, i) => {
      const h = (n / top) * (height - 16);
      ctx.fillRect(i * step + 1, height - h, Math.max(1, step - 2), h);
    });
    ctx.strokeStyle = '#d73a49';
    ctx.lineWidth = 2;
    ctx.beginPath();
    open.forEach((n, i) => {
      const y = height - (n / top) * (height - 16) - 1;
      if (i === 0) ctx.moveTo(0, y); else ctx.lineTo((i + 1) * step, y);
    });
    ctx.stroke();
    ctx.fillStyle = '#6a737d';
    ctx.font = '11px system-ui, sans-serif';
    ctx.fillText(`max ${top}`, 4, 11);
    canvas.dataset.peak = String(Math.max(0, ...rates));
    canvas.dataset.open = String(snapshot.open);
  }

  function showFigures(snapshot) {
    const t = snapshot.totals || {};
    const recent = snapshot.messages_per_second.slice(-5).reduce((a, b) => a + b, 0) / 5;
    $('m-open').textContent = String(snapshot.open);
    $('m-rate').textContent = recent.toFixed(1);
    $('m-delivered').textContent = String(t.MessagesDelivered || 0);
    $('m-delivered').dataset.value = String(t.MessagesDelivered || 0);
    $('m-auth').textContent = `${t.AuthorizerAllowed || 0} / ${t.AuthorizerRefused || 0}`;
    $('m-events').textContent = `${t.ClientEvents || 0}, ${t.WebhooksReceived || 0}`;
    drawChart(snapshot);
  }

  let figuresFailing = false;
  async function pollFigures() {
    try {
      showFigures(await call('/metrics.json'));
      figuresFailing = false;
    } catch (e) {
      if (!figuresFailing) showError('live figures', `/metrics.json: ${e.message}`);
      figuresFailing = true;
    }
    setTimeout(pollFigures, 1000);
  }

  call('/config.json').then((config) => {
    state.config = config;
    for (const server of SERVERS) part(server, 'address').textContent = addressOf(server);
    $('signin-button').disabled = false;
    $('token-button').disabled = false;
    document.body.dataset.ready = 'true';
    pollFigures();
  }, (e) => showError('config', `/config.json: ${e.message}`));
})();
