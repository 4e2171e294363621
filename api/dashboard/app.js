// stickyd dashboard. Plain JavaScript, no dependencies, no build step.
//
// Everything the API returns (client ids above all: arbitrary bytes a
// client chose) reaches the page through textContent, never as markup.
// The page is static; it calls the /v1 API next to it with the bearer
// token the user pasted, kept in sessionStorage (this tab only).
'use strict';

(function () {
  const TOKEN_KEY = 'stickyd.apiToken';
  const REFRESH_MS = 3000;
  // Relative to /dashboard/, so the page also works behind a path prefix.
  const API = new URL('../v1/', document.baseURI);

  const $ = (id) => document.getElementById(id);
  const seg = encodeURIComponent; // one escaped path segment ("/" -> %2F)

  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  let backends = [];
  let lastJSON = '';
  let needToken = false; // a 401 pauses auto-refresh until a token is set
  let inflight = false;
  let seq = 0; // refreshes started
  let applied = 0; // the latest refresh whose answer is shown

  class APIError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // api calls the admin API and returns its JSON (null for 204). Errors
  // carry the API's {"error": ...} message.
  async function api(method, path) {
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = 'Bearer ' + token;
    let res;
    try {
      res = await fetch(new URL(path, API), {
        method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error',
      });
    } catch (e) {
      throw new APIError(0, 'cannot reach the stickyd API (' + e.message + ')');
    }
    const text = await res.text();
    let body = null;
    if (text) {
      try { body = JSON.parse(text); } catch (e) { body = null; }
    }
    if (!res.ok) {
      const msg = body && typeof body.error === 'string' ? body.error : 'HTTP ' + res.status;
      throw new APIError(res.status, msg);
    }
    return body;
  }

  // el builds an element with a class and text (as text, never markup).
  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  // printable shows control, invisible and bidi characters as \uXXXX so a
  // crafted client id cannot disguise itself.
  function printable(s) {
    return s.replace(/[\u0000-\u001f\u007f-\u009f\u00ad\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\\]/g,
      (c) => (c === '\\' ? '\\\\' : '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0')));
  }

  // displayID shows the exact bytes of an id (client_id_b64): UTF-8 text
  // when it is, else with \xNN for the bytes that are not.
  function displayID(b64, fallback) {
    let bytes;
    try {
      bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    } catch (e) {
      return printable(fallback);
    }
    try {
      return printable(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
    } catch (e) {
      return Array.from(bytes, (b) => (b >= 0x20 && b < 0x7f && b !== 0x5c
        ? String.fromCharCode(b) : '\\x' + b.toString(16).padStart(2, '0'))).join('');
    }
  }

  function formatTTL(sec) {
    if (!sec) return 'never expires';
    const parts = [];
    for (const [n, u] of [[86400, 'd'], [3600, 'h'], [60, 'm'], [1, 's']]) {
      if (sec >= n) {
        parts.push(Math.floor(sec / n) + u);
        sec %= n;
      }
    }
    return parts.join(' ');
  }

  function say(msg) {
    $('status').textContent = msg;
  }

  function showAlert(msg) {
    const a = $('alert');
    a.textContent = msg;
    a.hidden = false;
  }

  function clearAlert() {
    const a = $('alert');
    a.hidden = true;
    a.textContent = '';
  }

  function handleError(e) {
    if (e.status === 401) {
      const first = !needToken;
      needToken = true;
      document.body.dataset.auth = 'required';
      showAlert(token
        ? 'The API refused the token (HTTP 401: ' + e.message + '). Paste the right api_token below.'
        : 'The API needs a token (HTTP 401). Paste stickyd\'s api_token (what STICKYD_API_TOKEN holds) in "API token" below.');
      if (first) $('token').focus();
      return;
    }
    showAlert('Error: ' + e.message);
  }

  // ---- backends and servers ----

  function badge(text, kind) {
    return el('span', 'badge ' + kind, text);
  }

  function renderBackends(list) {
    const root = $('backends');
    const frag = document.createDocumentFragment();
    if (list.length === 0) frag.append(el('p', 'muted', 'No backends configured.'));
    for (const b of list) {
      const art = el('article', 'backend');
      art.dataset.backend = b.name;
      const counted = b.servers.every((s) => s.bindings !== null);
      const total = b.servers.reduce((n, s) => n + (s.bindings || 0), 0);

      const h = el('h3');
      h.append(el('span', 'name', b.name), ' ');
      h.append(el('span', 'muted', 'keyed by ' + (b.key === 'username' ? 'username' : 'client id')), ' ');
      h.append(el('span', 'total', counted ? total + ' binding' + (total === 1 ? '' : 's') : 'bindings: store unavailable'));
      art.append(h);

      const table = el('table', 'servers');
      const cap = el('caption', 'visually-hidden', 'Servers of backend ' + b.name);
      const head = el('thead');
      const hr = el('tr');
      for (const t of ['Server', 'State', 'Bindings', 'Connected']) {
        const th = el('th', '', t);
        th.scope = 'col';
        hr.append(th);
      }
      const ath = el('th');
      ath.scope = 'col';
      ath.append(el('span', 'visually-hidden', 'Action'));
      hr.append(ath);
      head.append(hr);
      const body = el('tbody');
      for (const s of b.servers) body.append(serverRow(b, s, total));
      table.append(cap, head, body);
      art.append(table);
      frag.append(art);
    }
    // Keep the keyboard focus on a server's button across the re-render.
    const f = document.activeElement;
    const keep = f && f.dataset && f.dataset.action && root.contains(f) ? [f.dataset.backend, f.dataset.server] : null;
    root.replaceChildren(frag);
    if (keep) {
      for (const b of root.querySelectorAll('button[data-action]')) {
        if (b.dataset.backend === keep[0] && b.dataset.server === keep[1]) b.focus();
      }
    }
  }

  function serverRow(b, s, total) {
    const tr = el('tr', 'server' + (s.up ? '' : ' is-down') + (s.draining ? ' is-draining' : ''));
    tr.dataset.server = s.name;

    const th = el('th');
    th.scope = 'row';
    th.append(el('span', 'server-name', s.name), el('span', 'addr', s.address));
    tr.append(th);

    const state = el('td', 'state');
    if (!s.up) state.append(badge('down', 'down'));
    else if (s.reported) state.append(badge('up', 'up'));
    else state.append(badge('up (not yet reported)', 'unknown'));
    if (s.draining) state.append(' ', badge('draining', 'draining'));
    if (s.haproxy_drain) state.append(' ', badge('HAProxy drain', 'draining'));
    tr.append(state);

    const td = el('td', 'bindings');
    const bar = el('div', 'bar');
    bar.setAttribute('aria-hidden', 'true');
    const fill = el('div', 'fill');
    const n = s.bindings;
    const pct = n !== null && total > 0 ? (100 * n) / total : 0;
    fill.style.width = pct.toFixed(1) + '%'; // CSSOM: allowed by the CSP
    bar.append(fill);
    const count = el('span', 'count', n === null ? '?' : String(n));
    count.dataset.count = n === null ? '' : String(n);
    const share = el('span', 'muted share', n === null ? '' : '(' + Math.round(pct) + '%)');
    td.append(bar, count, ' ', share);
    tr.append(td);
    // Clients an agent reports connected: their bindings do not expire.
    const c = s.connected;
    const conn = el('td', 'connected', c === null || c === undefined ? '?' : String(c));
    conn.dataset.count = c === null || c === undefined ? '' : String(c);
    tr.append(conn);

    const act = el('td', 'action');
    const btn = el('button', s.draining ? 'secondary' : 'warn', s.draining ? 'Undrain' : 'Drain');
    btn.type = 'button';
    btn.dataset.action = s.draining ? 'undrain' : 'drain';
    btn.dataset.backend = b.name;
    btn.dataset.server = s.name;
    btn.setAttribute('aria-label', (s.draining ? 'Stop draining ' : 'Drain ') + s.name + ' in ' + b.name);
    btn.title = s.draining ? 'Let the server take new clients again' : 'Send no new clients to this server; existing bindings stay';
    act.append(btn);
    tr.append(act);
    return tr;
  }

  function fillBackendSelect() {
    const sel = $('backend');
    const want = sel.value || new URLSearchParams(location.search).get('backend') || '';
    sel.replaceChildren(...backends.map((b) => {
      const o = el('option', '', b.name);
      o.value = b.name;
      return o;
    }));
    if (backends.some((b) => b.name === want)) sel.value = want;
  }

  // refresh reloads GET /v1/backends. Auto-refresh skips a round while
  // one is in flight; forced ones (after an action) do not, and an older
  // answer never overwrites a newer one.
  async function refresh(force) {
    if (!force && (inflight || needToken || document.hidden)) return;
    const my = ++seq;
    inflight = true;
    try {
      const data = await api('GET', 'backends');
      if (my < applied) return;
      applied = my;
      needToken = false;
      delete document.body.dataset.auth;
      clearAlert();
      const json = JSON.stringify(data.backends);
      if (json !== lastJSON) {
        lastJSON = json;
        backends = data.backends;
        renderBackends(backends);
        fillBackendSelect();
      }
      $('updated').textContent = 'Updated ' + new Date().toLocaleTimeString() + ' · every ' + REFRESH_MS / 1000 + ' s';
      document.body.dataset.state = 'ok';
    } catch (e) {
      if (my < applied) return;
      applied = my;
      document.body.dataset.state = 'error';
      handleError(e);
      if (!lastJSON) { // nothing shown yet: say why instead of "Loading"
        $('backends').replaceChildren(el('p', 'muted', e.status === 401
          ? 'Set the API token below to see the backends.' : 'Could not load the backends.'));
        $('updated').textContent = e.status === 401 ? 'Needs a token' : 'Not loaded';
      }
    } finally {
      if (my === seq) inflight = false;
    }
  }

  async function onAction(ev) {
    const btn = ev.target.closest('button[data-action]');
    if (!btn) return;
    if (btn.getAttribute('aria-busy') === 'true') return; // already sent
    const { action, backend, server } = btn.dataset;
    // Busy rather than disabled: disabling would drop the keyboard focus.
    btn.setAttribute('aria-busy', 'true');
    try {
      await api(action === 'drain' ? 'PUT' : 'DELETE',
        'backends/' + seg(backend) + '/servers/' + seg(server) + '/drain');
      say(action === 'drain'
        ? server + ' (' + backend + ') is draining: no new clients; its bindings stay until evicted.'
        : server + ' (' + backend + ') is no longer draining.');
      await refresh(true);
    } catch (e) {
      handleError(e);
      btn.removeAttribute('aria-busy');
    }
  }

  // ---- client lookup ----

  function dl(pairs) {
    const d = el('dl');
    for (const [k, v, cls] of pairs) {
      d.append(el('dt', '', k));
      const dd = el('dd', cls || '', v);
      d.append(dd);
    }
    return d;
  }

  async function lookup(backend, id) {
    const out = $('result');
    delete out.dataset.state;
    out.replaceChildren(el('p', 'muted', 'Looking up ' + printable(id) + '…'));
    if (id === '.' || id === '..') {
      // A browser resolves such a path segment instead of sending it.
      out.replaceChildren(el('p', 'error', 'A browser cannot send the id "' + id +
        '" in a URL; use: stickyd ctl bindings get -- ' + id));
      return;
    }
    const shown = printable(id);
    try {
      const b = await api('GET', 'backends/' + seg(backend) + '/bindings/' + seg(id));
      out.dataset.state = 'bound';
      out.replaceChildren(dl([
        ['Client id', displayID(b.client_id_b64, b.client_id), 'client-id'],
        ['Backend', backend],
        ['Server', b.server, 'bound-server'],
        ['TTL', formatTTL(b.ttl_seconds)],
        ['Pinned', b.pinned ? 'yes' : 'no'],
        ['Connected', b.connected ? 'yes' : 'no', 'connected'],
      ]));
    } catch (e) {
      if (e.status !== 404) {
        out.dataset.state = 'error';
        out.replaceChildren(el('p', 'error', 'Error: ' + e.message));
        if (e.status === 401) handleError(e);
        return;
      }
      try {
        const p = await api('GET', 'backends/' + seg(backend) + '/placement/' + seg(id));
        out.dataset.state = 'unbound';
        const msg = el('p');
        msg.append(el('strong', '', 'No binding'), ' for ', el('code', 'client-id', shown), ' in ' + backend + '. ');
        msg.append(p.server
          ? 'A new connection would be placed on '
          : 'Every server is reported down: there is nowhere to place it now.');
        if (p.server) msg.append(el('strong', 'placement', p.server), '.');
        out.replaceChildren(msg);
      } catch (e2) {
        out.dataset.state = 'error';
        out.replaceChildren(el('p', 'error', 'Error: ' + e2.message));
      }
    }
  }

  function onSearch(ev) {
    ev.preventDefault();
    const backend = $('backend').value;
    const id = $('client').value;
    if (!id || !backend) return;
    const q = new URLSearchParams({ backend, client: id });
    history.replaceState(null, '', '?' + q.toString());
    lookup(backend, id);
  }

  // ---- token ----

  function showTokenState() {
    $('token-state').textContent = token ? 'A token is set for this tab.' : 'No token set.';
  }

  function onToken(ev) {
    ev.preventDefault();
    const v = $('token').value.trim();
    if (!v) return;
    token = v;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('token').value = '';
    needToken = false;
    showTokenState();
    say('Token saved for this tab.');
    lastJSON = '';
    refresh(true).then(lookupFromURL);
  }

  function onForget() {
    token = '';
    sessionStorage.removeItem(TOKEN_KEY);
    showTokenState();
    say('Token forgotten.');
  }

  // lookupFromURL acts on /dashboard/?client=ID[&backend=B], once the
  // backends are known (after a token, when one was needed).
  let urlLookupDone = false;
  function lookupFromURL() {
    const params = new URLSearchParams(location.search);
    const id = params.get('client');
    const backend = $('backend').value || params.get('backend') || '';
    if (urlLookupDone || !id || !backend || backends.length === 0) return;
    urlLookupDone = true;
    $('client').value = id;
    lookup(backend, id);
  }

  async function start() {
    $('backends').addEventListener('click', onAction);
    $('search-form').addEventListener('submit', onSearch);
    $('token-form').addEventListener('submit', onToken);
    $('forget').addEventListener('click', onForget);
    showTokenState();
    await refresh(true);
    lookupFromURL();
    setInterval(refresh, REFRESH_MS);
    document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); });
  }

  start();
}());
