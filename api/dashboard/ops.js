// stickyd dashboard, day-2 operations: the caller's role (a read-only
// token disables every button, saying why), live decisions per second and
// store state, a paged bindings browser with pin and evict, rebalance and
// evacuation with confirmation and progress. Same rules as app.js: data
// reaches the page as text only.
'use strict';

(function () {
  const TOKEN_KEY = 'stickyd.apiToken';
  const API = new URL('../v1/', document.baseURI);
  const METRICS = new URL('../metrics', document.baseURI);
  const READY = new URL('../readyz', document.baseURI);
  const SAMPLES = 100; // 5 minutes at one sample each 3 s
  const OUTCOMES = ['existing', 'placed', 'moved', 'pinned_down', 'fallback', 'no_key', 'no_server', 'unknown_backend'];
  const COLORS = ['#2f6fd0', '#2a9d55', '#d99a1e', '#8e44ad', '#c0392b', '#7f8c8d', '#34495e', '#e67e22'];
  const READ_ONLY_WHY = 'Read-only token: changes need stickyd\'s api_token.';
  const $ = (id) => document.getElementById(id);
  const seg = encodeURIComponent;

  let role = 'admin';
  let history = []; // {t, totals}
  let cursors = ['']; // page starts of the bindings browser
  let page = 0;

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

  async function call(method, url, allowText, body) {
    const headers = { Accept: 'application/json' };
    if (token()) headers.Authorization = 'Bearer ' + token();
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(url, { method, headers, body, cache: 'no-store', credentials: 'omit', redirect: 'error' });
    const text = await res.text();
    if (allowText) return { status: res.status, text };
    let out = null;
    try { out = text ? JSON.parse(text) : null; } catch (e) { out = null; }
    if (!res.ok) throw new Error((out && out.error) || 'HTTP ' + res.status);
    return out;
  }
  const v1 = (method, path) => call(method, new URL(path, API));

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function printable(s) {
    return s.replace(/[\u0000-\u001f\u007f-\u009f\u00ad\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\\]/g,
      (c) => (c === '\\' ? '\\\\' : '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0')));
  }

  function opsSay(msg) { $('ops-status').textContent = msg; }

  // ---- role ----

  function applyRole() {
    const ro = role === 'read';
    document.body.dataset.role = role;
    $('readonly').hidden = !ro;
    for (const b of document.querySelectorAll('button[data-action], button.op')) {
      if (ro) {
        b.disabled = true;
        b.title = READ_ONLY_WHY;
      } else if (b.title === READ_ONLY_WHY) {
        b.disabled = false;
        b.title = '';
      }
    }
  }

  async function loadRole() {
    try {
      role = (await v1('GET', 'whoami')).role;
    } catch (e) {
      return; // 401: app.js asks for the token
    }
    applyRole();
  }

  // ---- live: decisions per second, store, breaker ----

  function parseMetrics(text) {
    const totals = {};
    let breaker = '';
    for (const line of text.split('\n')) {
      let m = /^stickyd_decisions_total\{outcome="([a-z_]+)"\} ([0-9.e+]+)$/.exec(line);
      if (m) totals[m[1]] = Number(m[2]);
      m = /^stickyd_store_breaker_state\{state="([a-z_]+)"\} 1$/.exec(line);
      if (m) breaker = m[1];
    }
    return { totals, breaker };
  }

  async function sampleLive() {
    let ready = 'unknown';
    try {
      const r = await call('GET', READY, true);
      ready = r.status === 200 ? 'ok' : 'unavailable';
    } catch (e) { ready = 'unreachable'; }
    $('store-state').textContent = ready;
    $('store-state').dataset.state = ready;
    let m;
    try {
      const r = await call('GET', METRICS, true);
      if (r.status !== 200) throw new Error('HTTP ' + r.status);
      m = parseMetrics(r.text);
    } catch (e) {
      $('breaker-state').textContent = 'metrics not served';
      return;
    }
    $('breaker-state').textContent = m.breaker || 'unknown';
    $('breaker-state').dataset.state = m.breaker;
    history.push({ t: Date.now(), totals: m.totals });
    if (history.length > SAMPLES + 1) history.shift();
    drawChart();
  }

  function rates() {
    const out = [];
    for (let i = 1; i < history.length; i++) {
      const dt = (history[i].t - history[i - 1].t) / 1000;
      const r = {};
      for (const o of OUTCOMES) r[o] = dt > 0 ? Math.max(0, ((history[i].totals[o] || 0) - (history[i - 1].totals[o] || 0)) / dt) : 0;
      out.push(r);
    }
    return out;
  }

  function drawChart() {
    const c = $('chart');
    const ctx = c.getContext('2d');
    const w = c.width, h = c.height;
    ctx.clearRect(0, 0, w, h);
    const rs = rates();
    c.dataset.samples = String(rs.length);
    let top = 1;
    for (const r of rs) for (const o of OUTCOMES) top = Math.max(top, r[o]);
    ctx.strokeStyle = '#ccc';
    ctx.strokeRect(0.5, 0.5, w - 1, h - 1);
    OUTCOMES.forEach((o, k) => {
      ctx.strokeStyle = COLORS[k];
      ctx.lineWidth = 2;
      ctx.beginPath();
      rs.forEach((r, i) => {
        const x = (i / Math.max(1, SAMPLES - 1)) * (w - 4) + 2;
        const y = h - 2 - (r[o] / top) * (h - 4);
        if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      });
      ctx.stroke();
    });
    const last = rs[rs.length - 1] || {};
    const legend = $('legend');
    legend.replaceChildren(...OUTCOMES.filter((o) => last[o] > 0 || o === 'existing' || o === 'placed').map((o) => {
      const li = el('li', 'legend-item', o + ': ' + (last[o] || 0).toFixed(1) + '/s');
      li.dataset.outcome = o;
      li.style.color = COLORS[OUTCOMES.indexOf(o)];
      return li;
    }));
    $('chart-max').textContent = 'scale: ' + top.toFixed(1) + '/s';
  }

  // ---- bindings browser ----

  async function fillFilters() {
    let data;
    try { data = await v1('GET', 'backends'); } catch (e) { return false; }
    const sel = $('b-backend');
    const keep = sel.value;
    sel.replaceChildren(...data.backends.map((b) => { const o = el('option', '', b.name); o.value = b.name; return o; }));
    if (keep) sel.value = keep;
    const b = data.backends.find((x) => x.name === sel.value) || data.backends[0];
    const srv = $('b-server');
    const keepS = srv.value;
    const any = el('option', '', 'any server');
    any.value = '';
    srv.replaceChildren(any, ...b.servers.map((s) => { const o = el('option', '', s.name); o.value = s.name; return o; }));
    srv.value = keepS;
    const ev = $('e-server');
    ev.replaceChildren(...b.servers.map((s) => { const o = el('option', '', s.name); o.value = s.name; return o; }));
    return b;
  }

  async function loadBindings() {
    const backend = $('b-backend').value;
    const q = new URLSearchParams({ limit: '20' });
    if ($('b-server').value) q.set('server', $('b-server').value);
    if ($('b-prefix').value) q.set('prefix', $('b-prefix').value);
    if (cursors[page]) q.set('cursor', cursors[page]);
    let data;
    try {
      data = await v1('GET', 'backends/' + seg(backend) + '/bindings?' + q.toString());
    } catch (e) {
      opsSay('Error: ' + e.message);
      return;
    }
    const rows = data.items.map((it) => bindingRow(backend, it));
    $('b-rows').replaceChildren(...rows);
    $('b-empty').hidden = rows.length > 0;
    cursors[page + 1] = data.next_cursor;
    $('b-next').disabled = !data.next_cursor;
    $('b-prev').disabled = page === 0;
    $('b-page').textContent = 'page ' + (page + 1);
    $('bindings-browser').dataset.loaded = String(Date.now());
    applyRole();
  }

  function bindingRow(backend, it) {
    const tr = el('tr', 'binding');
    tr.dataset.id = it.client_id;
    tr.append(el('td', 'client-id', printable(it.client_id)), el('td', 'b-srv', it.server),
      el('td', '', it.ttl_seconds ? it.ttl_seconds + ' s' : 'never'), el('td', '', it.pinned ? 'pinned' : '-'),
      el('td', 'b-conn', it.connected ? 'connected' : '-'));
    const act = el('td', 'action');
    const ev = el('button', 'op warn', 'Evict');
    ev.type = 'button';
    ev.dataset.op = 'evict';
    const pin = el('button', 'op secondary', 'Pin here');
    pin.type = 'button';
    pin.dataset.op = 'pin';
    act.append(pin, ' ', ev);
    tr.append(act);
    ev.addEventListener('click', async () => {
      if (!window.confirm('Evict the binding of ' + printable(it.client_id) + ' (' + it.server + ')? Its next connect is placed afresh.')) return;
      try {
        await v1('DELETE', 'backends/' + seg(backend) + '/bindings/' + seg(it.client_id));
        opsSay('Evicted ' + printable(it.client_id) + '.');
        loadBindings();
      } catch (e) { opsSay('Error: ' + e.message); }
    });
    pin.addEventListener('click', async () => {
      if (!window.confirm('Pin ' + printable(it.client_id) + ' to ' + it.server + '? It stays there until unpinned.')) return;
      try {
        await call('PUT', new URL('backends/' + seg(backend) + '/bindings/' + seg(it.client_id), API), false, JSON.stringify({ server: it.server, pinned: true }));
        opsSay('Pinned ' + printable(it.client_id) + ' to ' + it.server + '.');
        loadBindings();
      } catch (e) { opsSay('Error: ' + e.message); }
    });
    return tr;
  }

  // ---- jobs: rebalance, evacuate ----

  async function runJob(path, what, confirmText) {
    if (!window.confirm(confirmText)) return;
    const prog = $('job-progress');
    try {
      let st = await v1('POST', path);
      prog.dataset.state = st.state;
      for (;;) {
        prog.textContent = what + ': ' + st.state + ', moved ' + st.moved +
          (st.planned !== undefined ? ' of ' + st.planned : '') + ', skipped ' + st.skipped + ', failed ' + st.failed;
        prog.dataset.state = st.state;
        if (st.state !== 'running') break;
        await new Promise((r) => setTimeout(r, 1000));
        st = await v1('GET', path.split('?')[0]);
      }
      loadBindings();
    } catch (e) {
      prog.textContent = what + ': ' + e.message;
      prog.dataset.state = 'error';
    }
  }

  function onRebalance() {
    const b = $('b-backend').value;
    const rate = $('j-rate').value || '500';
    runJob('backends/' + seg(b) + '/rebalance?rate=' + seg(rate) + '&tolerance=' + seg($('j-tol').value || '0.05'),
      'Rebalance of ' + b, 'Rebalance ' + b + ' at ' + rate + '/s? Moved clients change broker at their next reconnect.');
  }

  function onEvacuate() {
    const b = $('b-backend').value, s = $('e-server').value;
    const rate = $('j-rate').value || '500';
    runJob('backends/' + seg(b) + '/servers/' + seg(s) + '/evacuate?rate=' + seg(rate),
      'Evacuation of ' + s, 'Drain ' + s + ' and move all its unpinned bindings away at ' + rate + '/s?');
  }

  async function start() {
    $('b-form').addEventListener('submit', (ev) => { ev.preventDefault(); cursors = ['']; page = 0; loadBindings(); });
    $('b-next').addEventListener('click', () => { page++; loadBindings(); });
    $('b-prev').addEventListener('click', () => { page = Math.max(0, page - 1); loadBindings(); });
    $('b-backend').addEventListener('change', fillFilters);
    $('j-rebalance').addEventListener('click', onRebalance);
    $('j-evacuate').addEventListener('click', onEvacuate);
    // app.js re-renders server rows: keep their buttons in step with the role.
    new MutationObserver(() => { if (role === 'read') applyRole(); }).observe($('backends'), { childList: true, subtree: true });
    const boot = async () => {
      await loadRole();
      if (await fillFilters()) { loadBindings(); return true; }
      return false;
    };
    if (!(await boot())) {
      const iv = setInterval(async () => { if (await boot()) clearInterval(iv); }, 1000);
    }
    window.addEventListener('storage', loadRole);
    $('token-form').addEventListener('submit', () => setTimeout(boot, 300));
    sampleLive();
    setInterval(sampleLive, 3000);
  }

  start();
}());
