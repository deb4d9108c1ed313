// The local demo page: a dev token, the API Gateway WebSocket and Pusher Channels (pusher-js),
// with everything that arrives listed live, and every failure shown on the page (#error and a
// red entry in the list). Served by devtools/stack.py; never deployed.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const state = { config: null, token: null, sub: null, userId: null, ws: null, pusher: null };

  // Every arrival becomes one <li data-transport="websocket|pusher|http|error" data-event="...">.
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

  // The user id the server names this user by (README, "User ids"): every character outside
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

  // --- Pusher Channels --------------------------------------------------------------------------
  // pusher-js custom channel authorization: the same POST pusher-js's ajax transport sends, but
  // a refusal is shown with its HTTP status and the server's error body.
  function channelAuthorizer(endpoint, token) {
    return (params, callback) => {
      const body = new URLSearchParams({ socket_id: params.socketId, channel_name: params.channelName });
      call(endpoint, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded', Authorization: `Bearer ${token}` },
        body,
      }).then((data) => callback(null, data), (e) => {
        showError('pusher auth', `${params.channelName}: ${e.message}`);
        callback(e, null);
      });
    };
  }

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
      channelAuthorization: { customHandler: channelAuthorizer(`${cfg.httpUrl}/pusher/auth`, state.token) },
      userAuthentication: { endpoint: `${cfg.httpUrl}/pusher/user-auth`, transport: 'ajax', headers },
    });
    state.pusher = pusher;
    pusher.connection.bind('state_change', (s) => {
      if (state.pusher !== pusher) return;
      setStatus('pusher-status', s.current);
      if (s.current === 'unavailable' || s.current === 'failed') {
        showError('pusher', `connection ${s.current}: soketi at ${cfg.pusher.host}:${cfg.pusher.port} does not answer`);
      }
    });
    pusher.connection.bind('error', (e) => {
      const data = e && e.error && e.error.data;
      showError('pusher', data && data.message ? `${data.code || ''} ${data.message}`.trim()
        : `connection error ${(e && e.type) || ''}`.trim());
    });
    const names = [`private-user-${state.userId}`, 'presence-lobby'];
    for (const name of names) {
      const channel = pusher.subscribe(name);
      channel.bind('pusher:subscription_succeeded', () => {
        log('pusher', 'subscribed', name);
        showChannels();
        if (name.startsWith('presence-')) showMembers(channel);
      });
      channel.bind('pusher:subscription_error', (error) => {
        if (error && error.type === 'AuthError') return; // shown by channelAuthorizer
        showError('pusher', `subscription to ${name} failed: ${JSON.stringify(error)}`);
      });
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
    $('channels').textContent = [`ws: private-user-${state.userId}`, ...subscribed.map((n) => `pusher: ${n}`)].join(', ');
  }

  function showMembers(channel) {
    const members = [];
    channel.members.each((m) => members.push((m.info && m.info.name) || m.id));
    $('members').textContent = members.join(', ') || '—';
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
    openWebSocket();
    openPusher();
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
    $('signin-button').disabled = false;
    $('token-button').disabled = false;
    document.body.dataset.ready = 'true';
    pollFigures();
  }, (e) => showError('config', `/config.json: ${e.message}`));
})();
