// The Switchyard console. Every value that comes from the store, the fleet or users (tenant
// ids, reasons, bodies) reaches the page through text nodes and attribute values only: no
// innerHTML, no inline script or style (the page's Content-Security-Policy forbids both).
// Writes go to the admin API with the token the operator entered, as a bearer header; the
// token lives in this tab's sessionStorage, never in a cookie.
'use strict';

(() => {
  const TOKEN_KEY = 'switchyard-admin-token';
  const REFRESH_MS = 5000;
  const $ = (id) => document.getElementById(id);

  // ---- Building the page: elements from data, text only ----

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === 'on') {
        for (const [event, fn] of Object.entries(value)) node.addEventListener(event, fn);
      } else if (name === 'class') {
        node.className = value;
      } else if (name === 'value') {
        node.value = value;
      } else if (name === 'checked' || name === 'disabled' || name === 'selected') {
        node[name] = Boolean(value);
      } else {
        node.setAttribute(name, String(value));
      }
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function replace(node, ...children) {
    node.replaceChildren();
    return append(node, children);
  }

  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    return node;
  }

  const badge = (text, kind) => el('span', { class: 'badge' + (kind ? ' ' + kind : '') }, text);
  const notice = (kind, ...children) => el('div', { class: 'notice ' + (kind || ''), role: kind === 'bad' ? 'alert' : null }, children);
  const kv = (pairs) => el('dl', { class: 'kv' },
    pairs.filter((p) => p).map(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  const panel = (title, ...children) => el('section', { class: 'panel', 'aria-label': title }, el('h2', {}, title), children);

  function ms(n) {
    if (n === null || n === undefined) return '-';
    if (n < 1000) return n + ' ms';
    if (n < 120000) return (n / 1000).toFixed(1) + ' s';
    if (n < 7200000) return Math.round(n / 60000) + ' min';
    return (n / 3600000).toFixed(1) + ' h';
  }
  const pct = (r) => (r === null || r === undefined) ? '-' : (100 * r).toFixed(1) + '%';
  const num = (n) => (n === null || n === undefined) ? '-' : Number(n).toLocaleString('en-US');

  // A flag item as words: "new", "legacy 90 / new 10".
  function placement(item) {
    if (!item) return 'no flag';
    if (item.target) return item.target;
    if (item.weights) return Object.entries(item.weights).map(([t, w]) => t + ' ' + w).join(' / ');
    return '?';
  }

  // ---- The token and the admin API ----

  const token = () => sessionStorage.getItem(TOKEN_KEY) || '';
  const OPERATOR_KEY = 'switchyard-operator';
  // Who writes: the name the operator gave, recorded as "NAME (console)".
  const operator = () => sessionStorage.getItem(OPERATOR_KEY) || '';
  const by = () => operator() ? operator() + ' (console)' : 'console';

  async function post(path, body) {
    return api(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  }

  // What a refused write says, for any of the console's writes.
  function refusal(r) {
    const what = r.status === 401 ? 'the router needs the admin token for writes'
      : r.status === 403 ? 'writes are disabled on this router'
        : r.body.error + (r.body.current_version !== undefined ? ' (now at version ' + r.body.current_version + ', by ' + (r.body.last_written_by || '?') + ')' : '');
    return 'Refused (' + r.status + '): ' + what + '. Nothing was written.';
  }

  function showTokenState() {
    const has = token() !== '';
    replace($('token-state'), has ? 'writes: token set' : 'read-only: no token');
    $('token-state').className = 'badge ' + (has ? 'ok' : 'warn');
  }

  async function api(path, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    opts.headers = Object.assign({ Accept: 'application/json' }, opts.headers);
    if (token()) opts.headers.Authorization = 'Bearer ' + token();
    opts.credentials = 'omit';
    opts.cache = 'no-store';
    let resp;
    try {
      resp = await fetch(path, opts);
    } catch (e) {
      return { ok: false, status: 0, body: { error: 'the router did not answer: ' + e.message } };
    }
    const text = await resp.text();
    let body;
    try { body = JSON.parse(text); } catch (e) { body = { error: text }; }
    return { ok: resp.ok, status: resp.status, body };
  }

  // ---- Charts: a line over the last minutes, fixed in size ----

  function chart(label, points, pick, unit, bad) {
    const values = points.map(pick);
    const known = values.filter((v) => v !== null && v !== undefined);
    const last = known.length ? known[known.length - 1] : null;
    const max = Math.max(1e-9, ...known);
    const box = svg('svg', { viewBox: '0 0 100 40', preserveAspectRatio: 'none', role: 'img',
      'aria-label': label + ' over the last ' + points.length + ' samples' });
    if (values.length > 1) {
      const step = 100 / (values.length - 1);
      const xy = values.map((v, i) => (i * step).toFixed(2) + ',' + (38 - 36 * ((v || 0) / max)).toFixed(2));
      box.appendChild(svg('polyline', { points: xy.join(' '), class: bad ? 'bad' : '' }));
    }
    const shown = last === null ? '-' : (last < 10 ? last.toFixed(2) : Math.round(last).toLocaleString('en-US')) + unit;
    return el('div', { class: 'chart' },
      el('div', { class: 'label' }, el('span', {}, label), el('span', { class: 'value' }, shown)),
      box);
  }

  // ---- Overview ----

  async function overview(main) {
    const { ok, body } = await api('/ui/api/overview');
    if (!ok) return replace(main, notice('bad', 'The overview could not be read: ', body.error));
    replace($('where'), 'router ', body.router, ' · flags v', body.store.version, ' · ', body.store.describe);
    $('where').title = $('where').textContent;
    const fleet = body.fleet;
    const fleetRows = fleet.routers.map((r) => el('tr', {},
      el('td', { class: 'id' }, r.router, r.this ? ' ' : '', r.this ? badge('this router') : ''),
      el('td', {}, r.build),
      el('td', { class: 'num' }, r.flag_version, ' ', r.behind ? badge('behind', 'warn') : ''),
      el('td', { class: 'num' }, ms(r.snapshot_age_ms)),
      el('td', { class: 'num' }, ms(r.seen_ms_ago)),
      el('td', {}, r.live ? badge('live', 'ok') : badge('stale', 'bad'))));
    const store = body.store;
    const targets = body.targets.map((t) => {
      const points = t.series || [];
      return panel('Target ' + t.name,
        el('p', {}, t.healthy ? badge('healthy', 'ok') : badge('unhealthy', 'bad'), ' ',
          t.evacuated ? badge('evacuated to ' + t.evacuated.to, 'bad') : ''),
        t.evacuated ? notice('bad', 'Evacuated to ', t.evacuated.to,
          t.evacuated.include_pinned ? ' (pinned tenants too)' : '', ' by ', t.evacuated.by || '?', ': ', t.evacuated.reason || '') : '',
        el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'Endpoint'), el('th', {}, 'State'))),
          el('tbody', {}, (t.endpoints || []).map((e) => el('tr', {},
            el('td', { class: 'id' }, e.endpoint),
            el('td', {}, badge(e.state, e.state === 'available' ? 'ok' : 'bad')))))),
        el('div', { class: 'charts' },
          chart('requests/s', points, (p) => p.rps, '/s'),
          chart('5xx/s', points, (p) => p.errors_ps, '/s', true),
          chart('p99', points, (p) => p.p99_ms, ' ms')),
        el('p', { class: 'muted' }, points.length ? 'Last ' + ms(points.length * body.series_step_s * 1000) + ', one point every ' + body.series_step_s + ' s (this router).' : 'Collecting: a point every ' + body.series_step_s + ' s.'));
    });
    const inForce = [];
    for (const h of body.holds) inForce.push(el('li', {}, badge('hold', 'warn'), ' ', h.id, ': ', num(h.tenants), ' tenants held, ', ms(h.left_ms), ' left'));
    for (const r of body.ramps) inForce.push(el('li', { class: 'ramp', 'data-ramp': r.id }, badge('ramp ' + r.state, r.state === 'rolled_back' ? 'bad' : ''), ' ', r.id, ': ',
      num(r.tenants), r.tenants === 1 ? ' tenant ' : ' tenants ', r.from, ' → ', r.to, ', step ', r.step, ' of ', r.steps.length,
      r.steps[r.step - 1] !== undefined ? ' (' + r.steps[r.step - 1] + '% on ' + r.to + ')' : '',
      r.state === 'running' ? ', next in ' + ms(r.step_left_ms) : '', r.why ? ' · ' + r.why : '',
      rampControls(r)));
    for (const e of body.evacuations) inForce.push(el('li', {}, badge('evacuation', 'bad'), ' ', e.side, ' → ', e.to, e.include_pinned ? ' (pinned too)' : ''));
    replace(main,
      el('h1', {}, 'Overview'),
      el('div', { class: 'grid' },
        panel('Fleet',
          fleet.error ? notice('bad', 'The fleet registry could not be read: ', fleet.error) : '',
          fleet.unreadable.length ? notice('bad', 'Unreadable records: ', fleet.unreadable.join(', ')) : '',
          el('table', {}, el('thead', {}, el('tr', {}, ['Router', 'Build', 'Flag version', 'Snapshot age', 'Last seen', ''].map((h) => el('th', {}, h)))),
            el('tbody', {}, fleetRows))),
        panel('Flag store',
          store.refused ? notice('bad', 'The store is refused: ', store.refused) : '',
          kv([['Store', store.describe], ['Version', store.version], ['Tenants', num(store.tenants)],
            ['Snapshot age', ms(store.age_ms)], ['Loaded', store.loaded ? 'yes' : 'not yet'],
            ['Rejected items', num(store.rejected_count)],
            ['Writes here', body.writes ? 'enabled (with the admin token)' : 'disabled on this router']]),
          store.rejected.length ? el('ul', {}, store.rejected.map((r) => el('li', { class: 'error' }, r))) : ''),
        panel('In force', el('div', { id: 'ramp-result', 'aria-live': 'polite' }, rampMessage),
          inForce.length ? el('ul', {}, inForce) : el('p', { class: 'muted' }, 'No hold, ramp or evacuation.'))),
      el('div', { class: 'grid' }, targets));
  }

  // Pause, resume or abort a ramp in force, with a reason; the answer replaces the controls.
  function rampControls(r) {
    if (r.state !== 'running' && r.state !== 'paused') return '';
    const reason = el('input', { class: 'ramp-reason', placeholder: 'why', size: 18, 'aria-label': 'Why (ramp ' + r.id + ')' });
    const act = async (action) => {
      if (!reason.value.trim()) {
        rampMessage = notice('bad', 'Ramp ' + r.id + ': say why first.');
      } else {
        const answer = await post('/ui/api/ramps/' + encodeURIComponent(r.id) + '/' + action, { reason: reason.value.trim(), by: operator() || null });
        rampMessage = answer.ok ? notice('ok', 'Ramp ' + r.id + ' ' + (action === 'abort' ? 'aborted: every tenant is back where it was' : action + 'd') + '.')
          : notice('bad', 'Ramp ' + r.id + ': ' + refusal(answer));
      }
      overview($('main'));
    };
    return el('form', { class: 'filters', on: { submit: (e) => e.preventDefault() } },
      reason,
      r.state === 'running' ? el('button', { type: 'button', class: 'ramp-pause', on: { click: () => act('pause') } }, 'Pause')
        : el('button', { type: 'button', class: 'ramp-resume', on: { click: () => act('resume') } }, 'Resume'),
      el('button', { type: 'button', class: 'danger ramp-abort', on: { click: () => act('abort') } }, 'Abort'));
  }

  // ---- Tenants ----

  const table = { prefix: '', target: '', mode: '', sealed: '', shadowed: '', held: '', after: '', trail: [] };

  function tenantLink(id) {
    return el('a', { href: '#/tenant/' + encodeURIComponent(id) }, id);
  }

  async function tenants(main) {
    const filter = (name, label, options) => el('label', {}, label,
      el('select', { id: 'filter-' + name, on: { change: (e) => { table[name] = e.target.value; table.after = ''; table.trail = []; loadPage(); } } },
        options.map(([v, t]) => el('option', { value: v, selected: table[name] === v }, t))));
    const search = el('input', { id: 'search', type: 'search', value: table.prefix, placeholder: 'tenant id prefix', 'aria-label': 'Search by tenant id prefix', spellcheck: 'false' });
    let timer = null;
    const searched = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        if (search.value === table.prefix) return;
        table.prefix = search.value; table.after = ''; table.trail = []; loadPage();
      }, 200);
    };
    // Typing, the field's clear button, and a value set at once (pasted, cleared) all search.
    for (const event of ['input', 'search', 'change']) search.addEventListener(event, searched);
    const overviewBody = (await api('/ui/api/overview')).body || {};
    const targetNames = (overviewBody.targets || []).map((t) => t.name);
    const yesNo = [['', 'any'], ['true', 'yes'], ['false', 'no']];
    const results = el('div', { id: 'results' });
    replace(main,
      el('h1', {}, 'Tenants'),
      el('div', { class: 'panel' },
        el('form', { class: 'filters', role: 'search', on: { submit: (e) => { e.preventDefault(); table.prefix = search.value; table.after = ''; table.trail = []; loadPage(); } } },
          el('label', {}, 'Id starts with', search),
          filter('target', 'On target', [['', 'any']].concat(targetNames.map((t) => [t, t]))),
          filter('mode', 'Mode', [['', 'any'], ['pinned', 'pinned'], ['split', 'split']]),
          filter('sealed', 'Sealed', yesNo),
          filter('shadowed', 'Shadowed', yesNo),
          filter('held', 'Held', yesNo)),
        results));
    search.focus();
    await loadPage();
  }

  async function loadPage() {
    const results = $('results');
    if (!results) return;
    const params = new URLSearchParams();
    for (const k of ['prefix', 'target', 'mode', 'sealed', 'shadowed', 'held', 'after']) if (table[k]) params.set(k, table[k]);
    const { ok, body } = await api('/ui/api/tenants?' + params.toString());
    if (!ok) return replace(results, notice('bad', body.error));
    const rows = body.tenants.map((t) => el('tr', {},
      el('td', { class: 'id' }, tenantLink(t.tenant)),
      el('td', {}, placement(t)),
      el('td', {}, t.sealed ? badge('sealed', 'warn') : ''),
      el('td', {}, t.shadow ? t.shadow.target + ' ' + t.shadow.percent + '%' : ''),
      el('td', {}, t.hold ? badge('held', 'warn') : ''),
      el('td', { class: 'num' }, t.version),
      el('td', {}, t.updated_by || ''),
      el('td', {}, t.reason || '')));
    const first = table.trail.length === 0;
    replace(results,
      el('div', { class: 'counts', 'aria-live': 'polite' },
        badge(num(body.matched) + ' of ' + num(body.total) + ' tenants'),
        Object.entries(body.by_target).map(([t, n]) => badge(t + ': ' + num(n)))),
      el('table', { id: 'tenant-table' },
        el('thead', {}, el('tr', {}, ['Tenant', 'Placement', '', 'Shadow', '', 'Version', 'By', 'Reason'].map((h) => el('th', {}, h)))),
        el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: 8, class: 'muted' }, 'No tenant matches.')))),
      el('div', { class: 'pager' },
        el('button', { type: 'button', id: 'page-first', disabled: first, on: { click: () => { table.after = ''; table.trail = []; loadPage(); } } }, 'First page'),
        el('button', { type: 'button', id: 'page-prev', disabled: first, on: { click: () => { table.trail.pop(); table.after = table.trail.length ? table.trail[table.trail.length - 1] : ''; loadPage(); } } }, 'Previous'),
        el('button', { type: 'button', id: 'page-next', disabled: !body.next, on: { click: () => { table.trail.push(body.next); table.after = body.next; loadPage(); } } }, 'Next page'),
        el('span', { class: 'muted' }, 'page ', table.trail.length + 1)));
  }

  // ---- One tenant ----

  async function tenantPage(main, id) {
    const [{ ok, body }, shadow] = await Promise.all([
      api('/ui/api/tenant/' + encodeURIComponent(id)),
      api('/shadow/' + encodeURIComponent(id)),
    ]);
    if (!ok) return replace(main, notice('bad', body.error));
    const t = body;
    const flag = t.flag;
    const badges = [];
    if (flag && flag.sealed) badges.push(badge('sealed on ' + placement(flag), 'warn'));
    if (t.hold) badges.push(badge('held: ' + t.hold.id, 'warn'));
    if (t.ramp) badges.push(badge('ramp ' + t.ramp.id + ' ' + t.ramp.state));
    if (flag && flag.shadow) badges.push(badge('shadow ' + flag.shadow.target + ' ' + flag.shadow.percent + '%'));

    const flagPanel = panel('Flag',
      flag ? kv([['Placement', placement(flag)], ['Mode', flag.target ? 'pinned' : 'split'],
        ['Sealed', flag.sealed ? 'yes: moving it away needs force' : 'no'],
        ['Shadow', flag.shadow ? flag.shadow.target + ' (' + flag.shadow.percent + '% of safe requests)' : 'none'],
        flag.jobs ? ['Job side', flag.jobs] : null,
        ['Version', flag.version], ['Last written by', flag.updated_by || '-'], ['At', flag.updated_at || '-'],
        ['Reason', flag.reason || '-']])
        : el('p', {}, 'No flag of its own: ',
          t.applies.default_flag ? 'the default flag (*) applies: ' + placement(t.applies.default_flag) : 'the router\'s default target applies: ' + t.applies.default_target));

    const explainOut = el('div', { id: 'explain-out', 'aria-live': 'polite' });
    const explainPath = el('input', { id: 'explain-path', value: '/', 'aria-label': 'Path' });
    const explainKey = el('input', { id: 'explain-key', placeholder: 'user key (optional)', 'aria-label': 'User key' });
    const explain = async () => {
      const q = new URLSearchParams({ tenant: id, path: explainPath.value || '/' });
      if (explainKey.value) q.set('key', explainKey.value);
      const r = await api('/explain?' + q.toString());
      replace(explainOut, r.body.target ? el('p', {}, 'Goes to ', el('strong', { id: 'explain-target' }, r.body.target), ': ', r.body.why)
        : el('p', {}, el('strong', { id: 'explain-target' }, 'nowhere'), ': ', r.body.why || r.body.error));
    };
    const pickPanel = panel('Where a request goes',
      el('form', { class: 'filters', on: { submit: (e) => { e.preventDefault(); explain(); } } },
        el('label', {}, 'Path', explainPath), el('label', {}, 'User key', explainKey),
        el('button', { type: 'submit' }, 'Explain')),
      explainOut);

    const ev = t.evidence;
    const s = shadow.body || {};
    // A body shown (with the token) may be empty; one withheld says so.
    const bodyText = (b) => (s.bodies === 'shown' ? (b === '' ? '(empty)' : b) : '(withheld)');
    const mismatches = (s.recent_mismatches || []).map((m) => el('div', { class: 'panel' },
      el('p', {}, el('strong', {}, m.kind), ' ', m.request, ' → ', m.target, ' at ', m.at, ': ', m.detail),
      el('div', { class: 'pair' },
        el('div', {}, el('div', { class: 'muted' }, 'primary ', m.primary_status), el('div', { class: 'body' }, el('pre', {}, bodyText(m.primary_body)))),
        el('div', {}, el('div', { class: 'muted' }, 'shadow ', m.shadow_status === null ? '-' : m.shadow_status), el('div', { class: 'body' }, el('pre', {}, bodyText(m.shadow_body)))))));
    const evidencePanel = panel('Shadow evidence (the fleet)',
      t.fleet_error ? notice('', 'Only this router\'s counts: ', t.fleet_error) : '',
      ev.compared ? kv([['Match rate', pct(ev.match_rate)], ['Compared', num(ev.compared)], ['Matched', num(ev.matched)],
        ['Routers', ev.routers.map((r) => r.router + ': ' + num(r.matched) + '/' + num(r.compared)).join(', ')]])
        : el('p', { class: 'muted' }, 'Nothing compared yet: does its flag have a shadow, and does it get traffic?'),
      mismatches.length ? [el('h2', {}, 'Recent mismatches on ', s.mismatches_from),
        s.bodies && s.bodies.startsWith('withheld') ? notice('', 'Bodies ', s.bodies) : '', mismatches] : '');

    const owner = t.owner || {};
    const ownerPanel = panel('Job owner', kv([['Owner', owner.owner || 'nobody'], ['Decided by', owner.decided_by || '-'],
      owner.held ? ['Held', 'yes: nobody runs its jobs until the hold ends'] : null]));

    const history = panel('History',
      t.history_error ? notice('', 'No audit trail here: ', t.history_error) : '',
      el('table', { id: 'history' }, el('thead', {}, el('tr', {}, ['At', 'By', 'Change', 'Reason'].map((h) => el('th', {}, h)))),
        el('tbody', {}, t.history.length ? t.history.map((r) => el('tr', {},
          el('td', {}, r.at), el('td', {}, r.by),
          el('td', {}, (r.old ? placement(r.old) + (r.old.sealed ? ' (sealed)' : '') : 'none'), ' → ', (r.new ? placement(r.new) + (r.new.sealed ? ' (sealed)' : '') : 'removed')),
          el('td', {}, r.reason))) : el('tr', {}, el('td', { colspan: 4, class: 'muted' }, 'No audit record.')))));

    replace(main,
      el('p', {}, el('a', { href: '#/tenants' }, '← Tenants')),
      el('h1', { id: 'tenant-id' }, id),
      el('p', {}, badges),
      el('div', { class: 'two' },
        el('div', {}, flagPanel, pickPanel, ownerPanel),
        el('div', {}, actions(t, ev), evidencePanel)),
      history);
  }

  // The actions: each is reviewed as a plan, then written with the version shown.
  function actions(t, ev) {
    const flag = t.flag;
    const sealed = Boolean(flag && flag.sealed);
    const version = flag ? flag.version : 0;
    const reason = el('input', { id: 'action-reason', placeholder: 'why (recorded with the write)', size: 36, 'aria-label': 'Reason' });
    const force = el('input', { id: 'action-force', type: 'checkbox' });
    const planBox = el('div', { id: 'plan', 'aria-live': 'polite' });
    const result = el('div', { id: 'write-result', 'aria-live': 'polite' });

    const review = (what, body, moves, endpoint) => {
      replace(result);
      if (!reason.value.trim()) return replace(planBox, notice('bad', 'Say why first: the reason is recorded with the write.'));
      body.reason = reason.value.trim();
      if (force.checked) body.force = true;
      const to = body.target || (body.weights ? Object.entries(body.weights).map(([k, v]) => k + ' ' + v).join(' / ') : null);
      const lines = [el('p', {}, el('strong', {}, what), ' for ', t.tenant)];
      if (moves) lines.push(el('p', {}, 'Moves from ', el('strong', {}, placement(flag)), ' to ', el('strong', {}, to)));
      lines.push(el('p', {}, 'Shadow evidence (fleet): ', ev.compared ? pct(ev.match_rate) + ' matched of ' + num(ev.compared) + ' compared on ' + ev.routers.length + ' router(s)' : 'none'));
      if (!endpoint) lines.push(el('p', {}, 'Written only if the flag is still at version ', version, ': another operator\'s write in between is refused, not overwritten.'));
      if (sealed && moves && !body.force) lines.push(notice('bad', 'This tenant is sealed: the store refuses to move it without force.'));
      if (body.force) lines.push(notice('bad', 'Forced: a sealed tenant\'s data may not be on the other side. The force is recorded with your reason.'));
      replace(planBox, el('div', { class: 'plan' }, lines,
        el('div', { class: 'pager' },
          el('button', { type: 'button', class: 'primary', id: 'plan-write', on: { click: () => (endpoint ? start(endpoint, body, result, planBox) : write(t.tenant, body, version, result, planBox)) } }, token() ? 'Write' : 'Write (needs the admin token)'),
          el('button', { type: 'button', id: 'plan-cancel', on: { click: () => replace(planBox) } }, 'Cancel'))));
      $('plan-write').focus();
    };

    const targets = t.targets;
    const current = flag && flag.target;
    const moveTo = el('select', { id: 'move-target', 'aria-label': 'Move to' }, targets.map((n) => el('option', { value: n, selected: n !== current && !!current }, n)));
    const weights = targets.map((n) => el('input', { type: 'number', min: 0, max: 100, size: 4, id: 'weight-' + n, 'aria-label': 'Weight of ' + n,
      value: flag && flag.weights ? (flag.weights[n] || 0) : (n === current ? 100 : 0) }));
    const held = el('input', { id: 'move-hold', type: 'checkbox' });
    const holdSeconds = el('input', { id: 'move-hold-seconds', type: 'number', min: 1, max: 300, value: 10, size: 4, 'aria-label': 'Hold at most, seconds' });
    const sealThere = el('input', { id: 'move-seal', type: 'checkbox' });
    const shadowTarget = el('select', { id: 'shadow-target', 'aria-label': 'Shadow target' }, targets.map((n) => el('option', { value: n }, n)));
    const shadowPct = el('input', { id: 'shadow-percent', type: 'number', min: 1, max: 100, value: 10, size: 4, 'aria-label': 'Shadow percent' });
    const form = (legend, ...children) => el('fieldset', {}, el('legend', {}, legend),
      el('form', { on: { submit: (e) => e.preventDefault() } }, children));

    return panel('Actions',
      token() ? '' : notice('', 'Read-only: enter the admin token above to write. Without it the router refuses every write.'),
      sealed ? notice('bad', 'Sealed on ', placement(flag), ': replication no longer runs back, so a move away is refused unless forced. Force only if you know its data is on the other side.') : '',
      el('div', { class: 'actions' },
        el('form', { class: 'filters', on: { submit: (e) => e.preventDefault() } },
          el('label', {}, 'Reason', reason),
          sealed ? el('label', {}, 'Force (sealed)', force) : ''),
        form('Move',
          el('label', {}, 'To', moveTo),
          el('label', {}, 'With a hold', held),
          el('label', {}, 'Hold at most (s)', holdSeconds),
          el('label', {}, 'Seal there', sealThere),
          el('button', { type: 'button', id: 'review-move', on: { click: () => {
            if (!held.checked) return review('Move', { target: moveTo.value, seal: sealThere.checked || undefined }, true);
            review('Move with a hold (requests queue on every router, in-flight ones finish, '
              + (t.gate ? 'the gate passes, ' : '') + 'then the flip releases them)',
            { tenants: [t.tenant], target: moveTo.value, seal: sealThere.checked, hold_max_seconds: Number(holdSeconds.value) }, true, '/ui/api/moves');
          } } }, 'Review move')),
        form('Dial a split',
          targets.map((n, i) => el('label', {}, n, weights[i])),
          el('button', { type: 'button', id: 'review-split', on: { click: () => {
            const w = {};
            targets.forEach((n, i) => { w[n] = Number(weights[i].value) || 0; });
            review('Dial', { weights: w }, true);
          } } }, 'Review dial')),
        form('Seal and shadow',
          el('button', { type: 'button', id: 'review-seal', disabled: !flag, on: { click: () => review(sealed ? 'Unseal' : 'Seal', { seal: !sealed }, false) } }, sealed ? 'Review unseal' : 'Review seal'),
          el('label', {}, 'Shadow to', shadowTarget), el('label', {}, 'Percent', shadowPct),
          el('button', { type: 'button', id: 'review-shadow-on', on: { click: () => review('Shadow on', { shadow: { target: shadowTarget.value, percent: Number(shadowPct.value) } }, false) } }, 'Review shadow'),
          el('button', { type: 'button', id: 'review-shadow-off', disabled: !(flag && flag.shadow), on: { click: () => review('Shadow off', { shadow: null }, false) } }, 'Review shadow off'))),
      rampForm(t, review, reason),
      planBox, result);
  }

  // Start a ramp of this tenant onto another side: the routers step its dial and roll back
  // on their own evidence.
  function rampForm(t, review, reason) {
    const flag = t.flag;
    if (!flag || flag.sealed || t.ramp) {
      return el('p', { class: 'muted' }, t.ramp ? 'In ramp ' + t.ramp.id + ' (' + t.ramp.state + ', step ' + t.ramp.step + ' of ' + t.ramp.steps.length + '): pause or abort it on the overview.'
        : 'A ramp needs a flag of its own, not sealed.');
    }
    const others = t.targets.filter((n) => n !== flag.target);
    const to = el('select', { id: 'ramp-to', 'aria-label': 'Ramp onto' }, others.map((n) => el('option', { value: n }, n)));
    const steps = el('input', { id: 'ramp-steps', value: '1,5,25,50', size: 10, 'aria-label': 'Steps, percent' });
    const minutes = el('input', { id: 'ramp-minutes', type: 'number', min: 1, value: 30, size: 4, 'aria-label': 'Minutes a step' });
    const max5xx = el('input', { id: 'ramp-max-5xx', type: 'number', min: 0, max: 100, step: 0.1, value: 1, size: 4, 'aria-label': 'Max 5xx points, percent' });
    const p99 = el('input', { id: 'ramp-p99', type: 'number', min: 1, step: 0.1, value: 1.5, size: 4, 'aria-label': 'Max p99 ratio' });
    const minRequests = el('input', { id: 'ramp-min-requests', type: 'number', min: 1, value: 500, size: 6, 'aria-label': 'Requests a step' });
    const go = () => {
      const body = {
        id: ('ui-' + t.tenant.replace(/[^A-Za-z0-9_-]/g, '-') + '-' + Date.now().toString(36)).slice(0, 64),
        tenants: [t.tenant], to: to.value,
        steps: steps.value.split(',').map((x) => Number(x.trim())).filter((x) => x > 0),
        step_seconds: Math.round(Number(minutes.value) * 60),
        max_5xx_percent: Number(max5xx.value), max_p99_ratio: Number(p99.value), min_requests: Number(minRequests.value),
      };
      review('Start ramp ' + body.id + ': ' + (flag.target || placement(flag)) + ' → ' + body.to + ' in steps ' + body.steps.join(', ') + '%, '
        + minutes.value + ' min each; roll back above ' + body.max_5xx_percent + ' points of 5xx or a p99 ' + body.max_p99_ratio + '× the other side', body, false, '/ui/api/ramps');
    };
    return el('fieldset', {}, el('legend', {}, 'Start a ramp'),
      el('form', { on: { submit: (e) => e.preventDefault() } },
        el('label', {}, 'Onto', to), el('label', {}, 'Steps %', steps), el('label', {}, 'Minutes a step', minutes),
        el('label', {}, 'Max 5xx points %', max5xx), el('label', {}, 'Max p99 ×', p99), el('label', {}, 'Requests a step', minRequests),
        el('button', { type: 'button', id: 'review-ramp', disabled: others.length === 0, on: { click: go } }, 'Review ramp')));
  }

  // A console write of its own (a ramp, a move with a hold): POSTed, then the page again.
  async function start(endpoint, body, result, planBox) {
    const r = await post(endpoint, Object.assign({ by: operator() || null }, body));
    replace(planBox);
    if (!r.ok) return replace(result, notice('bad', refusal(r)));
    if (r.body.move !== undefined) return followMove(r.body.move);
    await route();
    replace($('write-result') || result, notice('ok', 'Ramp ', body.id, ' started: the routers drive it (see the overview).'));
  }

  // A move with a hold, step by step, until it moved or aborted; then the page again.
  async function followMove(id) {
    const show = (m) => {
      const kind = m.state === 'moved' ? 'ok' : (m.state === 'running' ? '' : 'bad');
      replace($('write-result'), notice(kind, 'Move ', id, ' (', m.tenants.join(', '), ' → ', m.to, '): ', m.state),
        el('pre', { id: 'move-log', class: 'body' }, m.lines.join('\n')));
    };
    for (;;) {
      const r = await api('/ui/api/moves');
      const m = r.ok && r.body.moves.find((x) => x.id === id);
      if (!m) return replace($('write-result'), notice('bad', 'Move ', id, ' is not known here any more.'));
      if (m.state !== 'running') {
        await route();
        return show(m);
      }
      show(m);
      await new Promise((done) => setTimeout(done, 300));
    }
  }

  async function write(tenant, body, version, result, planBox) {
    const r = await api('/flags/' + encodeURIComponent(tenant), {
      method: 'PUT',
      headers: { 'Content-Type': 'application/json', 'If-Match': '"' + version + '"' },
      body: JSON.stringify(Object.assign({ by: by() }, body)),
    });
    replace(planBox);
    if (r.ok) {
      // The page again, as the router now holds it, with what was written.
      await route();
      replace($('write-result') || result, notice('ok', 'Written: version ', r.body.new ? r.body.new.version : '?',
        '. Every router follows within a second.'));
      return;
    }
    replace(result, notice('bad', refusal(r)));
  }

  // ---- Routing between the pages ----

  let refresher = null;
  // The last ramp command's answer, kept across the overview's refreshes.
  let rampMessage = null;

  async function route() {
    clearInterval(refresher);
    const main = $('main');
    const hash = location.hash || '#/';
    for (const a of document.querySelectorAll('.top nav a')) a.classList.toggle('here', a.getAttribute('href') === hash);
    replace($('where'));
    try {
      if (hash.startsWith('#/tenant/')) {
        await tenantPage(main, decodeURIComponent(hash.slice('#/tenant/'.length)));
      } else if (hash.startsWith('#/tenants')) {
        await tenants(main);
      } else {
        await overview(main);
        // The refresh waits while the operator is on a control of the page (typing a reason,
        // or moving through it from the keyboard): rebuilding it would take the focus away.
        refresher = setInterval(() => {
          const on = document.activeElement;
          if (!(on && on !== main && main.contains(on))) overview(main);
        }, REFRESH_MS);
      }
      replace($('refreshed'), 'Read at ', new Date().toLocaleTimeString());
    } catch (e) {
      replace(main, notice('bad', 'The page failed: ', e.message));
    }
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('token-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const v = $('token-input').value.trim();
      if (v) sessionStorage.setItem(TOKEN_KEY, v);
      $('token-input').value = '';
      showTokenState();
      route();
    });
    $('token-forget').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      showTokenState();
      route();
    });
    $('operator-input').value = operator();
    $('operator-input').addEventListener('change', (e) => sessionStorage.setItem(OPERATOR_KEY, e.target.value.trim()));
    window.addEventListener('hashchange', route);
    showTokenState();
    route();
  });
})();
