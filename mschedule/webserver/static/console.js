// mschedule web console: one page over the HTTP API. No build step, nothing loaded from elsewhere.
// Views are picked by the URL's hash (#/agents, #/run, #/task/ID, #/history, #/jobs, #/job/NAME, #/schedules,
// #/schedule/ID, #/audit).
// Everything from the API is put on the page as text (textContent), never as HTML: scripts' outputs are
// whatever the hosts printed.
'use strict';

const TOKEN_KEY = 'mschedule.token';
const SELECTION_KEY = 'mschedule.selection';
const DRAFT_KEY = 'mschedule.draft';
const FILTER_KEY = 'mschedule.agent-filter';
const STATES = ['SUCCEED', 'FAILED', 'CANCELLED', 'RUNNING', 'WAITING'];
const AGENTS_REFRESH_MS = 2000;
const TASK_REFRESH_MS = 700;
const HISTORY_REFRESH_MS = 3000;
const HISTORY_PAGE = 50;
/** The task view asks for the last this many bytes of each output; a button loads one output whole. */
const OUTPUT_TAIL_BYTES = 8192;
/** After a target ends, the task view fetches the task again (its stored outputs) at most this often. */
const TASK_RELOAD_MS = 2000;
/** An ended task whose notifications are still being delivered is fetched again this often. */
const NOTIFY_REFRESH_MS = 5000;
const SCHEDULES_REFRESH_MS = 5000;
const PARAMS = [
  { name: 'timeout', label: 'timeout', def: '0',
    hint: "Seconds before a host's script is killed (exit code 124), at most 604800 (7 days); 0 = no limit." },
  { name: 'parallel', label: 'parallel', def: '1', hint: 'How many hosts run the script at the same time.' },
  { name: 'fail_rate', label: 'fail_rate (%)', def: '0',
    hint: 'Stop starting hosts once more than this % of all hosts failed; 0 = stop at the first failure.' },
  { name: 'fail_count', label: 'fail_count', def: '-1',
    hint: 'Stop starting hosts once more than this many failed; -1 = no count limit (fail_rate still holds).' },
];

// ---- small helpers ---------------------------------------------------------------------------------

const $ = (selector, root = document) => root.querySelector(selector);

/** An element: h('td', {class: 'num', text: '3'}, child, ...). */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'value' || key === 'checked') el[key] = value;
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : value);
  }
  setChildren(el, children, true);
  return el;
}

/** Replace (or with ``add``, append) an element's children; null, undefined and false are skipped. */
function setChildren(el, children, add = false) {
  const nodes = [children].flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false)
    .map((c) => (c instanceof Node ? c : String(c)));
  if (add) el.append(...nodes); else el.replaceChildren(...nodes);
}

function formatTime(seconds) {
  if (!seconds) return '';
  const d = new Date(seconds * 1000);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function formatBytes(n) {
  return n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KB` : `${(n / 1048576).toFixed(1)} MB`;
}

function formatDuration(started, finished) {
  if (!started || !finished) return '';
  const s = finished - started;
  return s < 60 ? `${s.toFixed(2)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

function loadJSON(storage, key, fallback) {
  try { return JSON.parse(storage.getItem(key)) ?? fallback; } catch { return fallback; }
}

function splitWords(text) {
  return text.split(/[\s,]+/).filter(Boolean);
}

function taskLink(taskId) {
  return h('a', { href: `#/task/${encodeURIComponent(taskId)}`, class: 'mono', text: taskId });
}

function scheduleLink(scheduleId) {
  return h('a', { href: `#/schedule/${encodeURIComponent(scheduleId)}`, class: 'mono', text: scheduleId });
}

function stateBadge(state) {
  return h('span', { class: `badge ${state}`, text: state });
}

/** A bar with one segment per state, as wide as its share of the targets. */
function progressBar(counts, total, small) {
  const bar = h('div', { class: small ? 'progress small' : 'progress', role: 'img' });
  bar.setAttribute('aria-label', STATES.map((s) => `${s} ${counts[s] || 0}`).join(', '));
  for (const state of STATES) {
    const n = counts[state] || 0;
    if (!n || !total) continue;
    const seg = h('span', { class: `seg ${state}`, title: `${state}: ${n}` });
    seg.style.width = `${(100 * n) / total}%`;
    bar.append(seg);
  }
  return bar;
}

function countsText(counts) {
  return h('span', { class: 'counts' }, STATES.filter((s) => counts[s]).map((s) => h('span', { text: `${s} ${counts[s]}` })));
}

// ---- the API, with the token asked for once ---------------------------------------------------------

/** An error answer: its HTTP status, message and ``field`` (the request field it is about, or null). */
class ApiError extends Error {
  constructor(status, message, field = null) { super(message); this.status = status; this.field = field; }
}

let tokenPrompt = null;

/** Ask for the token in a dialog; every request that got a 401 meanwhile waits for the same answer. */
function askToken(message) {
  if (!tokenPrompt) {
    tokenPrompt = new Promise((resolve) => {
      const dialog = $('#token-dialog');
      $('#token-error').textContent = message;
      $('#token-input').value = '';
      $('#token-form').onsubmit = (event) => {
        event.preventDefault();
        const token = $('#token-input').value.trim();
        if (!token) return;
        sessionStorage.setItem(TOKEN_KEY, token);
        dialog.close();
        tokenPrompt = null;
        showTokenButton();
        resolve();
      };
      dialog.showModal();
    });
  }
  return tokenPrompt;
}

function showTokenButton() {
  $('#forget-token').hidden = !sessionStorage.getItem(TOKEN_KEY);
}

// ---- who is signed in, and what their role may do ----------------------------------------------------

/** ``GET /whoami`` of the token in use: {user, role, token_id, selector}; null until known. */
let identity = null;
let identityLoading = null;

/**
 * Ask who the token is and show it in the header; the page's role (``body[data-role]``) hides every control
 * marked ``data-needs`` that the role may not use (console.css). The master decides: a call refused anyway
 * shows its 403 message. Should /whoami fail (a master that cannot check the token), nothing is hidden.
 */
function loadIdentity() {
  if (!identityLoading) {
    identityLoading = api('GET', '/whoami').then((me) => { identity = me; }, () => { identity = null; })
      .finally(() => { identityLoading = null; showIdentity(); });
  }
  return identityLoading;
}

function showIdentity() {
  const who = $('#whoami');
  if (identity && identity.role) {
    document.body.dataset.role = identity.role;
    who.textContent = `${identity.user || 'no token needed'} \u00b7 ${identity.role}`;
    who.title = identity.selector ? `may run on ${JSON.stringify(identity.selector)} only` : '';
  } else {
    delete document.body.dataset.role;
    who.textContent = '';
    who.title = '';
  }
}

/** Mark a control as needing ``role``: hidden from a lower role (a viewer, or an operator for "admin"). */
function needs(role, el) {
  el.dataset.needs = role;
  return el;
}

/** A line shown only to a role below ``role``, saying why a view's buttons are missing. */
function lacking(role, what) {
  return h('p', { class: 'muted role-note', 'data-lacks': role,
    text: `${what} needs the ${role} role.` });
}

/** JSON in, JSON out; a 4xx/5xx becomes an ApiError carrying the API's own error text. */
/**
 * Idempotency keys for one form's task requests (docs/api.md): the same body sent again after a failure (a 503
 * while a master fails over, say, and the operator clicks again) keeps its key, so the master makes one task;
 * another body, or a request that succeeded, gets a new one.
 */
function requestKeys() {
  let last = null;
  return {
    for(body) {
      const text = JSON.stringify(body ?? null);
      if (!last || last.text !== text) {
        const bytes = crypto.getRandomValues(new Uint8Array(16));  // crypto.randomUUID needs https
        last = { text, key: Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('') };
      }
      return { 'Idempotency-Key': last.key };
    },
    done() { last = null; },
  };
}

async function api(method, path, body, headers = {}) {
  for (;;) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const init = { method, headers: { ...headers } };
    if (token) init.headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, `the web tier does not answer (${err.message})`);
    }
    let data = null;
    try { data = await response.json(); } catch { data = null; }
    if (response.status === 401) {
      // ask only if no other request has got a new token meanwhile: a request sent with the old one
      // just goes again (and must not throw away the token the operator has just typed)
      if (sessionStorage.getItem(TOKEN_KEY) === token) {
        sessionStorage.removeItem(TOKEN_KEY);
        await askToken(token ? 'That token was refused. Try again.' : 'This console needs an API token.');
        if (path !== '/whoami') { identity = null; loadIdentity(); }  // another token: maybe another role
      }
      continue;
    }
    if (!response.ok) {
      throw new ApiError(response.status, (data && data.error) || `HTTP ${response.status}`,
        (data && typeof data.field === 'string') ? data.field : null);
    }
    return data;
  }
}

/**
 * Follow a server-sent event stream with fetch (EventSource cannot send the Authorization header, and the
 * token must stay out of URLs): ``onEvent(name, data)`` for each event. Resolves true when the stream ended
 * with ``end``, false when it broke (the caller falls back to polling); leaving the view aborts it.
 */
async function followEvents(ctx, path, onEvent) {
  const controller = new AbortController();
  ctx.cleanups.push(() => controller.abort());
  const token = sessionStorage.getItem(TOKEN_KEY);
  let response;
  try {
    response = await fetch(path, { headers: token ? { Authorization: `Bearer ${token}` } : {}, signal: controller.signal });
  } catch {
    return false;
  }
  if (!response.ok || !response.body) return false;
  // the web tier's clock (the Date header, whole seconds: its middle is the best guess); started is the master's
  const date = Date.parse(response.headers.get('Date'));
  onEvent('open', { skew: date ? date / 1000 + 0.5 - Date.now() / 1000 : 0 });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let fields = {};
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buffer += value;
      let newline;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline).replace(/\r$/, '');
        buffer = buffer.slice(newline + 1);
        if (line === '') {
          if (fields.event) {
            onEvent(fields.event, JSON.parse(fields.data || 'null'));
            if (fields.event === 'end') { controller.abort(); return true; }
          }
          fields = {};
        } else if (!line.startsWith(':')) {  // a comment: the keep-alive
          const colon = line.indexOf(':');
          const name = colon < 0 ? line : line.slice(0, colon);
          fields[name] = (fields[name] ? `${fields[name]}\n` : '') + line.slice(colon + 1).replace(/^ /, '');
        }
      }
    }
  } catch {
    return false;
  }
}

// ---- targets ticked in the Agents view ---------------------------------------------------------------

const selection = new Set(loadJSON(sessionStorage, SELECTION_KEY, []));

function saveSelection() {
  sessionStorage.setItem(SELECTION_KEY, JSON.stringify([...selection]));
  const n = selection.size;
  $('#selection-badge').textContent = n ? `${n} agent${n === 1 ? '' : 's'} ticked` : '';
}

function setSelection(ids) {
  selection.clear();
  ids.forEach((id) => selection.add(id));
  saveSelection();
}

// ---- views --------------------------------------------------------------------------------------------

/**
 * Run ``fn`` now and again after each run ends, until the view is left or ``fn`` returns false. The pause
 * is ``ms``, or four times what the last run took if that is longer: a task with thousands of targets
 * (a large answer) is fetched less often, so an open page never keeps the master busy. A hidden tab skips
 * its turns.
 */
function every(ctx, ms, fn) {
  const tick = async () => {
    if (!ctx.alive) return;
    const started = performance.now();
    let again = true;
    if (!document.hidden) {  // a tab in the background asks nothing
      try {
        again = (await fn()) !== false;
      } catch (err) {
        ctx.showError(err);
        again = err.status !== 404;  // gone (a pruned task, say) stays gone; anything else may pass
      }
    }
    const pause = Math.max(ms, 4 * (performance.now() - started));
    if (again && ctx.alive) later(ctx, tick, pause);
  };
  tick();
}

/** setTimeout that leaving the view cancels; a timer that has fired is forgotten (a page may stay open for days). */
function later(ctx, fn, ms) {
  const id = setTimeout(() => { ctx.timers.delete(id); fn(); }, ms);
  ctx.timers.add(id);
  return id;
}

function errorBox() {
  return h('p', { class: 'error', role: 'alert' });
}

/** The view's error line: what a refresh fails with is shown there. */
function viewError(ctx) {
  const box = errorBox();
  ctx.showError = (err) => { box.textContent = err.message; };
  return box;
}

function tableHead(titles) {
  return h('thead', {}, h('tr', {}, titles.map((t) => h('th', {}, t))));
}

function agentMatches(id, agent, text, labelFilters) {
  for (const filter of labelFilters) {
    const [key, ...rest] = filter.split(':');
    const labels = agent.labels || {};
    if (!(key in labels)) return false;
    if (rest.length && labels[key] !== rest.join(':')) return false;
  }
  if (!text) return true;
  const haystack = [id, agent.hostname, ...(agent.ip || []),
    ...Object.entries(agent.labels || {}).map(([k, v]) => `${k}:${v}`)].join(' ').toLowerCase();
  return haystack.includes(text.toLowerCase());
}

function agentsView(main, args, query, ctx) {
  const saved = loadJSON(sessionStorage, FILTER_KEY, {});
  const textInput = h('input', { type: 'search', id: 'agent-filter', placeholder: 'filter: id, hostname, IP, label', value: saved.text || '' });
  const labelInput = h('input', { type: 'text', id: 'label-filter', placeholder: 'labels: dc:bj role', value: saved.labels || '' });
  const autoRefresh = h('input', { type: 'checkbox', id: 'auto-refresh', checked: true });
  const selectAll = h('input', { type: 'checkbox', id: 'select-all', title: 'tick every agent shown' });
  const shown = h('span', { class: 'muted', id: 'agents-shown' });
  const runButton = needs('operator', h('button', { type: 'button', class: 'primary', id: 'run-selected',
    onclick: () => { location.hash = '#/run'; } }));
  const clearButton = h('button', { type: 'button', text: 'Clear ticks', onclick: () => { setSelection([]); render(); } });
  const tbody = h('tbody');
  const error = viewError(ctx);
  const pendingKeys = pendingKeysPanel(ctx);
  let agents = {};
  let visible = [];
  let updated = '';

  main.append(
    h('h2', { text: 'Agents' }),
    h('div', { class: 'toolbar' }, textInput, labelInput,
      h('label', {}, autoRefresh, ' auto-refresh'), shown, h('span', { class: 'spacer' }), clearButton, runButton),
    error, pendingKeys.panel,
    h('table', { id: 'agents' },
      tableHead([selectAll, 'Agent', 'Hostname', 'IPs', 'Labels', 'Status', 'Busy', 'Last heartbeat']),
      tbody));

  function render() {
    const text = textInput.value.trim();
    const labelFilters = splitWords(labelInput.value);
    sessionStorage.setItem(FILTER_KEY, JSON.stringify({ text: textInput.value, labels: labelInput.value }));
    const ids = Object.keys(agents).sort((a, b) => (agents[a].hostname || '').localeCompare(agents[b].hostname || '') || a.localeCompare(b));
    visible = ids.filter((id) => agentMatches(id, agents[id], text, labelFilters));
    tbody.replaceChildren(...visible.map((id) => agentRow(id, agents[id])));
    if (!visible.length) {
      tbody.append(h('tr', {}, h('td', { colspan: 8, class: 'empty', text: ids.length ? 'No agent matches the filter.' : 'No agent has registered yet.' })));
    }
    const ticked = visible.filter((id) => selection.has(id)).length;
    selectAll.checked = visible.length > 0 && ticked === visible.length;
    selectAll.indeterminate = ticked > 0 && ticked < visible.length;
    shown.textContent = `${visible.length} of ${ids.length} shown, as of ${updated}`;
    runButton.textContent = `Run on ${selection.size} ticked`;
    runButton.disabled = selection.size === 0;
  }

  function agentRow(id, agent) {
    const box = h('input', { type: 'checkbox', class: 'pick', checked: selection.has(id), 'aria-label': `target ${id}`,
      onchange: () => { if (box.checked) selection.add(id); else selection.delete(id); saveSelection(); render(); } });
    return h('tr', { 'data-agent': id, class: agent.online ? 'online' : 'offline' },
      h('td', {}, box),
      h('td', { class: 'mono', text: id }),
      h('td', { class: 'hostname', text: agent.hostname || '' }),
      h('td', { class: 'mono', text: (agent.ip || []).join(', ') }),
      h('td', {}, Object.entries(agent.labels || {}).map(([k, v]) => h('span', { class: 'chip', text: `${k}:${v}` }))),
      h('td', {}, h('span', { class: `badge ${agent.online ? 'online' : 'offline'}`, text: agent.online ? 'online' : 'offline' })),
      h('td', {}, agent.running ? ['busy ', taskLink(agent.running)] : (agent.busy ? 'busy' : h('span', { class: 'muted', text: 'idle' }))),
      h('td', { class: 'num', text: agent.heartbeat_age === undefined ? '' : `${agent.heartbeat_age.toFixed(1)} s ago` }));
  }

  selectAll.addEventListener('change', () => {
    for (const id of visible) { if (selectAll.checked) selection.add(id); else selection.delete(id); }
    saveSelection();
    render();
  });
  textInput.addEventListener('input', render);
  labelInput.addEventListener('input', render);
  every(ctx, AGENTS_REFRESH_MS, async () => {
    if (!autoRefresh.checked && Object.keys(agents).length) return true;
    agents = await api('GET', '/task/targets');
    updated = formatTime(Date.now() / 1000).slice(11);  // a stale list says how stale it is
    error.textContent = '';
    render();
    await pendingKeys.refresh();
    return true;
  });
}

/**
 * Agents whose key waits for an operator: they are not agents yet, so the agents table cannot show them.
 *
 * Any new key that registers is pending, so a flood can leave up to the master's --max-pending (1000) here
 * (issue 12: 300 rows pushed Accept and Reject 24,000 px down). The list scrolls inside a box of bounded
 * height under its heading, filter and buttons; a filter narrows it; the ticked rows the filter shows are
 * accepted or rejected in one call (POST /keys/accept or /keys/reject); long hostnames, ids and IPs are
 * cut with an ellipsis (the whole text is the cell's title) and a key wraps (it is there to be compared),
 * so every row's Accept and Reject stay on screen. Rows are redrawn only when the list or the filter changed: ticks, the filter's focus and the
 * scroll position survive the refreshes.
 */
function pendingKeysPanel(ctx) {
  const heading = h('h3', { id: 'pending-heading' });
  const filter = h('input', { type: 'search', id: 'pending-filter', placeholder: 'filter: id, hostname, IP, key',
    'aria-label': 'filter the pending keys' });
  const shown = h('span', { class: 'muted', id: 'pending-shown' });
  const selectAll = needs('admin', h('input', { type: 'checkbox', id: 'pending-select-all', title: 'tick every key shown',
    'aria-label': 'tick every key shown' }));
  const acceptSelected = needs('admin', h('button', { type: 'button', class: 'primary', id: 'pending-accept-selected' }));
  const rejectSelected = needs('admin', h('button', { type: 'button', id: 'pending-reject-selected' }));
  const note = h('p', { class: 'note', id: 'pending-note', role: 'status' });
  const error = h('p', { class: 'error', id: 'pending-error', role: 'alert' });
  const tbody = h('tbody');
  const columns = ['pick', 'agent', 'host', 'ip', 'key', 'seen', 'actions'].map((c) => h('col', { class: `c-${c}` }));
  const panel = h('div', { id: 'pending-keys', hidden: true }, h('div', { class: 'card' },
    heading,
    h('p', { class: 'muted', text: 'An agent runs nothing until its key is accepted. Compare the key with '
      + "the one in the agent's state directory (agent.key) before accepting." }),
    h('div', { class: 'toolbar' }, filter, shown, h('span', { class: 'spacer' }), acceptSelected, rejectSelected),
    lacking('admin', 'Accepting or rejecting a key'), note, error,
    h('div', { class: 'pending-scroll' },
      h('table', { id: 'pending-table' }, h('colgroup', {}, columns),
        tableHead([selectAll, 'Agent', 'Hostname', 'IPs', 'Key', 'First seen', '']), tbody))));
  const ticked = new Set();
  let pending = [];
  let visible = [];
  let listed = '';  // the list the rows were drawn from, as text: redraw only when it or the filter changed
  let drawn = null;
  let busy = false;
  let armed = null;

  const clipped = (text, cls) => h('td', { class: `clip ${cls}`, text, title: text });

  function row(k) {
    const box = needs('admin', h('input', { type: 'checkbox', class: 'pick', checked: ticked.has(k.agent_id),
      'aria-label': `tick the key of ${k.agent_id}`,
      onchange: () => { if (box.checked) ticked.add(k.agent_id); else ticked.delete(k.agent_id); update(); } }));
    box.dataset.id = k.agent_id;
    return h('tr', { 'data-key': k.agent_id },
      h('td', {}, box),
      clipped(k.agent_id, 'mono'), clipped(k.hostname || '', 'hostname'), clipped((k.ip || []).join(', '), 'mono'),
      h('td', { class: 'mono key', text: k.key }), clipped(formatTime(k.first_seen), ''),
      h('td', { class: 'actions-cell' },
        needs('admin', h('button', { type: 'button', class: 'primary accept', text: 'Accept', onclick: decideOne(k.agent_id, 'accept') })), ' ',
        needs('admin', h('button', { type: 'button', class: 'reject', text: 'Reject', onclick: decideOne(k.agent_id, 'reject') }))));
  }

  function draw() {
    const text = filter.value.trim().toLowerCase();
    if (drawn !== `${text}\n${listed}`) {
      visible = !text ? pending : pending.filter((k) => [k.agent_id, k.hostname, ...(k.ip || []), k.key]
        .join(' ').toLowerCase().includes(text));
      tbody.replaceChildren(...visible.map(row));
      if (!visible.length) tbody.append(h('tr', {}, h('td', { colspan: 7, class: 'empty', text: 'No pending key matches the filter.' })));
      drawn = `${text}\n${listed}`;
    }
    update();
  }

  /** Ticks, counts and buttons, without redrawing the rows. */
  function update() {
    const n = visible.filter((k) => ticked.has(k.agent_id)).length;
    for (const box of tbody.querySelectorAll('input.pick')) box.checked = ticked.has(box.dataset.id);
    selectAll.checked = visible.length > 0 && n === visible.length;
    selectAll.indeterminate = n > 0 && n < visible.length;
    heading.textContent = `${pending.length} agent key${pending.length === 1 ? '' : 's'} waiting for a decision`;
    shown.textContent = `${visible.length} of ${pending.length} shown, ${n} ticked`;
    acceptSelected.textContent = `Accept ${n} selected`;
    rejectSelected.textContent = armed ? `Click again to reject ${n}` : `Reject ${n} selected`;
    acceptSelected.disabled = rejectSelected.disabled = busy || n === 0;
  }

  function decideOne(agentId, verdict) {
    return async () => {
      note.textContent = '';
      error.textContent = '';
      try {
        await api('POST', `/keys/${encodeURIComponent(agentId)}/${verdict}`);
        ticked.delete(agentId);
        await refresh();
      } catch (err) { error.textContent = err.message; }
    };
  }

  /** The ticked rows the filter shows, in one call; every id gets its own result from the master. */
  async function decideTicked(verdict) {
    const ids = visible.filter((k) => ticked.has(k.agent_id)).map((k) => k.agent_id);
    if (!ids.length) return;
    busy = true;
    update();
    note.textContent = '';
    error.textContent = '';
    try {
      const answer = await api('POST', `/keys/${verdict}`, { agent_ids: ids });
      answer.results.forEach((r) => { if (r.ok) ticked.delete(r.agent_id); });
      note.textContent = `${answer.done} key${answer.done === 1 ? '' : 's'} ${verdict === 'accept' ? 'accepted' : 'rejected'}.`;
      const failed = answer.results.filter((r) => !r.ok);
      if (failed.length) {
        error.textContent = `${failed.length} failed: ${failed.slice(0, 3).map((r) => r.error).join('; ')}${failed.length > 3 ? '; ...' : ''}`;
      }
    } catch (err) {
      error.textContent = err.message;
    } finally {
      busy = false;
    }
    await refresh();
  }

  async function refresh() {
    let keys;
    try {
      keys = await api('GET', '/keys');
    } catch (err) {
      if (err.status === 400) { panel.hidden = true; return; }  // a master run --insecure has no keys
      throw err;
    }
    pending = keys.filter((k) => k.state === 'pending');
    const ids = new Set(pending.map((k) => k.agent_id));
    for (const id of [...ticked]) if (!ids.has(id)) ticked.delete(id);  // decided elsewhere meanwhile
    listed = pending.map((k) => `${k.agent_id}\t${k.hostname}\t${(k.ip || []).join(',')}\t${k.key}`).join('\n');
    panel.hidden = pending.length === 0;
    draw();
  }

  filter.addEventListener('input', draw);
  selectAll.addEventListener('change', () => {
    for (const k of visible) { if (selectAll.checked) ticked.add(k.agent_id); else ticked.delete(k.agent_id); }
    update();
  });
  acceptSelected.addEventListener('click', () => decideTicked('accept'));
  rejectSelected.addEventListener('click', () => {
    if (!armed) {  // two clicks: a stray click does not turn away a rack of hosts
      armed = later(ctx, () => { armed = null; update(); }, 4000);
      update();
      return;
    }
    clearTimeout(armed);
    ctx.timers.delete(armed);
    armed = null;
    decideTicked('reject');
  });
  return { panel, refresh };
}

// ---- the task form (Run view, and saving a job version) ----------------------------------------------

/** A field path and the paths that enclose it: "selector.labels.dc" -> itself, "selector.labels", "selector". */
function enclosingFields(path) {
  const out = [path];
  let at;
  while ((at = Math.max(path.lastIndexOf('.'), path.lastIndexOf('['))) > 0) {
    path = path.slice(0, at);
    out.push(path);
  }
  return out;
}

/** A labelled input with its hint and the slot its errors go to (``data-error-for``: the API's field name). */
function field(name, label, input, hint) {
  return h('div', { class: 'field', 'data-field': name },
    h('label', { for: input.id }, label), input,
    hint ? h('span', { class: 'hint', text: hint }) : null,
    h('p', { class: 'error', 'data-error-for': name }));
}

/**
 * Put the API's message next to the field its answer names, or the nearest enclosing one that ``root`` has:
 * "selector.labels.dc" goes to selector.labels, "targets[2]" to targets, "params.VERSION" to that
 * parameter's input; the rest in ``general``. The field comes from the answer, never from the message.
 */
function showFieldError(root, err, general) {
  let slot = null;
  for (const name of err.field ? enclosingFields(err.field) : []) {
    slot = [...root.querySelectorAll('[data-error-for]')].find((el) => el.dataset.errorFor === name);
    if (slot) break;
  }
  (slot || general).textContent = err.message;
}

function clearErrors(root) {
  root.querySelectorAll('.error').forEach((el) => { el.textContent = ''; });
}

/**
 * One input per declared job parameter (``decls``, a job version's ``params`` list): a select for one with
 * choices, a password input for a secret, the default prefilled, a required one marked. ``given`` prefills
 * values (a task's params, for a rerun); the names in ``ask`` (a task's secrets: the API answers "***" for
 * them) start empty and say their value is wanted again. Each input's errors go beside it (field
 * ``params.NAME``). ``values()``: the inputs that are not empty, by name; an empty one is left out, so the
 * master's default and required rules decide.
 */
function paramInputs(prefix, decls, given = {}, ask = []) {
  const inputs = new Map();
  const fields = decls.map((d) => {
    const id = `${prefix}-param-${d.name}`;
    const again = ask.includes(d.name);
    const start = again ? '' : String(given[d.name] ?? d.default ?? '');
    let input;
    if (d.secret) {
      input = h('input', { type: 'password', id, autocomplete: 'new-password', value: start });
    } else if (d.choices && d.choices.length) {
      input = h('select', { id }, d.choices.includes('') ? null : h('option', { value: '', text: '(not given)' }),
        d.choices.map((c) => h('option', { value: c, text: c })));
      input.value = start;
    } else {
      input = h('input', { type: 'text', id, autocomplete: 'off', value: start, placeholder: d.pattern || '' });
    }
    input.name = d.name;
    input.dataset.param = d.name;
    if (d.required) { input.required = true; input.setAttribute('aria-required', 'true'); }
    inputs.set(d.name, input);
    const hint = [d.description, d.pattern ? `must match ${d.pattern}` : '',
      again ? 'secret: give its value again (it is not kept once a task ends)' : (d.secret ? 'secret: shown as *** afterwards' : '')]
      .filter(Boolean).join('; ');
    const label = [h('span', { class: 'mono', text: d.name }), d.required ? h('span', { class: 'required', text: ' required' }) : null];
    return field(`params.${d.name}`, label, input, hint);
  });
  const values = () => Object.fromEntries([...inputs].filter(([, input]) => input.value !== '').map(([n, input]) => [n, input.value]));
  return { fields, values };
}

/** Tab indents, Enter keeps the line's indentation: a script keeps its shape. */
function scriptEditor(id) {
  const area = h('textarea', { id, name: 'script', class: 'script', spellcheck: 'false', wrap: 'off',
    autocomplete: 'off', placeholder: '#!/bin/sh\n# runs with its #! interpreter (/bin/sh without one) on every target\nhostname; uptime' });
  area.addEventListener('keydown', (event) => {
    if (event.key === 'Tab' && !event.shiftKey && !event.ctrlKey && !event.altKey) {
      event.preventDefault();
      area.setRangeText('    ', area.selectionStart, area.selectionEnd, 'end');
      area.dispatchEvent(new Event('input', { bubbles: true }));
    } else if (event.key === 'Enter' && !event.shiftKey && !event.ctrlKey) {
      const before = area.value.slice(0, area.selectionStart);
      const indent = before.slice(before.lastIndexOf('\n') + 1).match(/^[ \t]*/)[0];
      if (indent) {
        event.preventDefault();
        area.setRangeText(`\n${indent}`, area.selectionStart, area.selectionEnd, 'end');
        area.dispatchEvent(new Event('input', { bubbles: true }));
      }
    } else if (event.key === 'Escape') {
      area.blur();
    }
  });
  return area;
}

/** ``{NAME: value}`` as ``NAME=value`` lines, and back; a line without ``=`` is an error on ``env``. */
function envText(env) {
  return Object.entries(env || {}).map(([k, v]) => `${k}=${v}`).join('\n');
}

function parseEnv(text) {
  const env = {};
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const at = line.indexOf('=');
    if (at < 1) throw new ApiError(400, `env: expected NAME=value on each line, got '${line.trim()}'`, 'env');
    env[line.slice(0, at).trim()] = line.slice(at + 1);
  }
  return env;
}

const DECL_COLUMNS = [
  { key: 'name', title: 'Name', placeholder: 'VERSION' },
  { key: 'default', title: 'Default', placeholder: '1.0' },
  { key: 'required', title: 'Required', box: true },
  { key: 'choices', title: 'Choices', placeholder: '1.0, 1.2' },
  { key: 'pattern', title: 'Pattern', placeholder: '^[0-9.]+$' },
  { key: 'secret', title: 'Secret', box: true },
  { key: 'description', title: 'Description', placeholder: 'what it is for' },
];

/**
 * The job editor's parameter declarations, one row each, saved as the job's ``params`` list. The master
 * checks them (names, a secret without a default, ...); its errors (field ``params[i].name`` and so on)
 * go to the cell of row i, so each row's slots are renumbered whenever a row goes.
 */
function declTable(id) {
  const tbody = h('tbody');
  const add = h('button', { type: 'button', id: `${id}-add-param`, text: 'Add parameter' });
  const table = h('table', { id: `${id}-params`, class: 'decls' }, tableHead([...DECL_COLUMNS.map((c) => c.title), '']), tbody);
  const fieldset = h('fieldset', { 'data-field': 'params' },
    h('legend', { text: 'Parameters (given at each run, passed to the script as environment variables)' }),
    table, h('p', { class: 'error', 'data-error-for': 'params' }), h('div', { class: 'actions' }, add));

  function renumber() {
    [...tbody.rows].forEach((row, i) => {
      row.querySelectorAll('[data-error-for]').forEach((el) => { el.dataset.errorFor = `params[${i}]${el.dataset.suffix}`; });
    });
    table.hidden = !tbody.rows.length;
  }

  function addRow(d = {}) {
    const row = h('tr', { 'data-param-row': '' });
    for (const c of DECL_COLUMNS) {
      const value = c.key === 'choices' ? (d.choices || []).join(', ') : d[c.key];
      const input = c.box ? h('input', { type: 'checkbox', name: `param-${c.key}`, checked: Boolean(value), 'aria-label': c.title })
        : h('input', { type: 'text', name: `param-${c.key}`, value: value ?? '', placeholder: c.placeholder, autocomplete: 'off',
          'aria-label': `parameter ${c.key}` });
      const slot = h('p', { class: 'error', 'data-error-for': '' });
      slot.dataset.suffix = `.${c.key}`;
      row.append(h('td', {}, input, slot));
    }
    const rowSlot = h('p', { class: 'error', 'data-error-for': '' });
    rowSlot.dataset.suffix = '';
    row.append(h('td', {}, h('button', { type: 'button', class: 'remove-param', text: 'Remove',
      onclick: () => { row.remove(); renumber(); } }), rowSlot));
    tbody.append(row);
    renumber();
    return row;
  }

  add.addEventListener('click', () => { $('input[name=param-name]', addRow()).focus(); });

  /** The declarations as the API takes them; an empty text field is left out. */
  function decls() {
    return [...tbody.rows].map((row) => {
      const out = {};
      for (const c of DECL_COLUMNS) {
        const input = $(`input[name=param-${c.key}]`, row);
        const list = c.key === 'choices' ? input.value.split(',').map((x) => x.trim()).filter(Boolean) : null;
        if (c.box) out[c.key] = input.checked;
        else if (list) { if (list.length) out.choices = list; }
        else if (c.key === 'name' || input.value.trim() !== '') out[c.key] = c.key === 'default' ? input.value : input.value.trim();
      }
      return out;
    });
  }

  function fill(list) {
    tbody.replaceChildren();
    (list || []).forEach((d) => addRow(d));
    renumber();
  }
  renumber();
  return { fieldset, decls, fill };
}

/**
 * The fields of a task: script, targets, selector, limits. ``onSubmit(body)`` sends it; an ApiError it
 * throws is shown next to the field the API's answer names (its ``field``).
 */
function taskForm({ id, submitLabel, onSubmit, withMessage = false, draftKey = null, role = 'operator', what = 'Running a script' }) {
  // a job version declares parameters; a plain task gets environment variables (a job run may not)
  const text = (name, placeholder) => h('input', { type: 'text', id: `${id}-${name}`, name, placeholder, autocomplete: 'off' });
  const script = scriptEditor(`${id}-script`);
  const targets = text('targets', 'agent ids, or tick them in Agents');
  const hostname = text('hostname', 'web-*');
  const labels = text('labels', 'dc:bj role:web');
  const group = h('select', { id: `${id}-group`, name: 'group' }, h('option', { value: '', text: '(none)' }));
  const batchBy = text('batch_by', 'dc');
  const batchOrder = text('batch_order', 'bj sh (others follow, by name)');
  const message = withMessage ? text('message', 'what changed') : null;
  const env = withMessage ? null : h('textarea', { id: `${id}-env`, name: 'env', class: 'env mono', rows: 3, spellcheck: 'false',
    wrap: 'off', autocomplete: 'off', placeholder: 'NAME=value\nLOG_LEVEL=debug' });
  const decls = withMessage ? declTable(id) : null;
  const general = errorBox();
  const note = h('p', { class: 'note' });
  const submit = needs(role, h('button', { type: 'submit', class: 'primary', text: submitLabel }));
  const params = PARAMS.map((p) => ({ ...p, input: h('input', { type: 'text', id: `${id}-${p.name}`, name: p.name, inputmode: 'decimal', value: p.def }) }));

  const form = h('form', { class: 'task-form', id, novalidate: true },
    h('div', { class: 'script-col' },
      field('script', 'Script', script, 'Run with its #! interpreter (/bin/sh without one) on each target. Tab indents; Esc then Tab leaves the editor.'),
      env ? field('env', 'Environment', env, 'Optional: one NAME=value per line, set for the script on every target.') : null,
      decls ? decls.fieldset : null,
      message ? field('message', 'Message', message, 'Why this version (kept with it).') : null),
    h('div', {},
      field('targets', 'Targets', targets, 'Agent ids, separated by spaces or commas; ticking in Agents fills this.'),
      h('fieldset', { 'data-field': 'selector' },
        h('legend', { text: 'or a selector (every field must match)' }),
        field('selector.hostname', 'Hostname glob', hostname, 'e.g. web-* or db-?'),
        field('selector.labels', 'Labels', labels, 'key:value pairs, all must match.'),
        field('selector.group', 'Group', group, 'A named group of agents.'),
        h('p', { class: 'error', 'data-error-for': 'selector' })),
      field('batch_by', 'Roll out by label', batchBy, 'One value of this label at a time (e.g. one datacenter after another).'),
      field('batch_order', 'Batch order', batchOrder, 'The label values to roll out first, in order.'),
      params.map((p) => field(p.name, p.label, p.input, `${p.hint} Default ${p.def}.`)),
      general, note,
      h('div', { class: 'actions' }, submit, lacking(role, what))));

  // a group filled in before the list of groups has loaded is kept in dataset.want until the operator picks
  group.addEventListener('change', () => { delete group.dataset.want; });
  api('GET', '/groups').then((groups) => {
    const chosen = group.dataset.want || group.value;
    group.append(...groups.map((g) => h('option', { value: g.name, text: g.name })));
    group.value = chosen;
  }).catch(() => {});

  function values() {
    const out = { script: script.value, targets: targets.value, hostname: hostname.value, labels: labels.value,
      group: group.value || group.dataset.want || '', batch_by: batchBy.value, batch_order: batchOrder.value };
    if (message) out.message = message.value;
    if (env) out.env = env.value;
    for (const p of params) out[p.name] = p.input.value;
    return out;
  }

  function fill(v) {
    if (v.script !== undefined) script.value = v.script;
    if (v.targets !== undefined) targets.value = v.targets;
    if (v.hostname !== undefined) hostname.value = v.hostname;
    if (v.labels !== undefined) labels.value = v.labels;
    if (v.group !== undefined) { group.dataset.want = v.group; group.value = v.group; }
    if (v.batch_by !== undefined) batchBy.value = v.batch_by;
    if (v.batch_order !== undefined) batchOrder.value = v.batch_order;
    if (message && v.message !== undefined) message.value = v.message;
    if (env && v.env !== undefined) env.value = v.env;
    if (decls && v.decls !== undefined) decls.fill(v.decls);
    for (const p of params) if (v[p.name] !== undefined) p.input.value = String(v[p.name]);
  }


  /** The request body; empty fields are left out so the API's defaults apply. */
  function body() {
    const v = values();
    const out = { script: v.script };
    const ids = splitWords(v.targets);
    if (ids.length) out.targets = ids;
    const selector = {};
    if (v.hostname.trim()) selector.hostname = v.hostname.trim();
    const pairs = splitWords(v.labels);
    if (pairs.length) {
      selector.labels = {};
      for (const pair of pairs) {
        const at = pair.indexOf(':');
        if (at < 1) throw new ApiError(400, `selector.labels: expected key:value, got '${pair}'`, 'selector.labels');
        selector.labels[pair.slice(0, at)] = pair.slice(at + 1);
      }
    }
    if (v.group) selector.group = v.group;
    if (Object.keys(selector).length) out.selector = selector;
    if (v.batch_by.trim()) out.batch_by = v.batch_by.trim();
    const order = splitWords(v.batch_order);
    if (order.length) out.batch_order = order;
    for (const p of params) {
      const raw = v[p.name].trim();
      // a number goes as a number; anything else goes as typed, for the API to name what is wrong
      if (raw !== '') out[p.name] = Number.isFinite(Number(raw)) ? Number(raw) : raw;
    }
    if (message && v.message.trim()) out.message = v.message.trim();
    if (env) { const vars = parseEnv(v.env); if (Object.keys(vars).length) out.env = vars; }
    if (decls) { const list = decls.decls(); if (list.length) out.params = list; }
    return out;
  }

  form.addEventListener('input', () => {
    if (draftKey) sessionStorage.setItem(draftKey, JSON.stringify(values()));
  });
  targets.addEventListener('change', () => { if (!withMessage) setSelection(splitWords(targets.value)); });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    note.textContent = '';
    submit.disabled = true;
    try {
      await onSubmit(body(), { note });
    } catch (err) {
      showFieldError(form, err, general);
    } finally {
      submit.disabled = false;
    }
  });
  return { form, fill };
}

/** Form values for a task or a job version's parameters (for a rerun or a new version). */
function formValuesFrom(script, params, targetIds) {
  const selector = params.selector || {};
  return {
    script,
    targets: (targetIds || params.targets || []).join(' '),
    hostname: targetIds ? '' : selector.hostname || '',
    labels: targetIds ? '' : Object.entries(selector.labels || {}).map(([k, v]) => `${k}:${v}`).join(' '),
    group: targetIds ? '' : selector.group || '',
    batch_by: params.batch_by || '',
    batch_order: (params.batch_order || []).join(' '),
    timeout: params.timeout, parallel: params.parallel, fail_rate: params.fail_rate, fail_count: params.fail_count,
    env: envText(params.env),
    // a job version's saved fields hold its parameter declarations (a list); a task's params are values
    decls: Array.isArray(params.params) ? params.params : [],
  };
}

function runView(main, args, query, ctx) {
  const keys = requestKeys();
  const { form, fill } = taskForm({
    id: 'run-form', submitLabel: 'Run', draftKey: DRAFT_KEY,
    onSubmit: async (body) => {
      const { task_id: taskId } = await api('POST', '/task', body, keys.for(body));
      keys.done();
      location.hash = `#/task/${encodeURIComponent(taskId)}`;
    },
  });
  const intro = h('p', { class: 'muted' });
  main.append(h('h2', { text: 'Run a script' }), intro, form);
  fill(loadJSON(sessionStorage, DRAFT_KEY, {}));
  const from = query.get('from');
  if (from) {
    intro.textContent = `Again, with the parameters and hosts of task ${from}.`;
    api('GET', `/task/${encodeURIComponent(from)}`).then((task) => {
      const ids = Object.keys(task.targets);
      const order = (task.batches || []).map((b) => b.value).filter((v) => v !== null);
      const values = formValuesFrom(task.script, { ...task, batch_order: order }, ids);
      fill(values);
      setSelection(ids);
      sessionStorage.setItem(DRAFT_KEY, JSON.stringify(values));
    }).catch((err) => { intro.textContent = `Task ${from}: ${err.message}`; });
  } else {
    intro.textContent = selection.size
      ? `${selection.size} agent(s) ticked in Agents are the targets; add or remove ids below, or use a selector.`
      : 'Tick agents in the Agents view, type their ids, or give a selector.';
    fill({ targets: [...selection].join(' ') });
  }
}

// ---- one task, live ------------------------------------------------------------------------------------

/** "12 lines", or "last 8.0 KB of 1.2 MB" when only the tail is shown, with timed out / truncated. */
function outputSummary(target, shown) {
  const lines = shown ? shown.split('\n').length - (shown.endsWith('\n') ? 1 : 0) : 0;
  const size = target.output_omitted
    ? `last ${formatBytes(target.output_bytes - target.output_omitted)} of ${formatBytes(target.output_bytes)}`
    : (lines ? `${lines} line${lines === 1 ? '' : 's'}` : 'no output');
  const notes = [target.timed_out ? 'timed out' : '', target.truncated ? 'truncated by the agent' : ''].filter(Boolean);
  return notes.length ? `${size} (${notes.join(', ')})` : size;
}

/** A name/value table (a task's params or env, as the API answers them: a secret's value is "***"). */
function valuesTable(id, values, secrets) {
  return h('table', { id, class: 'values' }, tableHead(['Name', 'Value']),
    h('tbody', {}, Object.entries(values).map(([k, v]) => h('tr', { 'data-name': k, class: secrets.includes(k) ? 'secret' : null },
      h('td', { class: 'mono', text: k }), h('td', { class: 'mono value', text: String(v) })))));
}

/** What became of a task's notifications: delivered, failed, or pending with its next attempt. */
function notificationsTable(list) {
  return h('table', { id: 'task-notifications' },
    tableHead(['URL', 'On', 'State', 'Attempts', 'Last status', 'Last error', 'Next attempt']),
    h('tbody', {}, list.map((n) => h('tr', { 'data-notification': n.url },
      h('td', { class: 'mono', text: n.url }), h('td', { text: (n.on || []).join(' ') }),
      h('td', {}, h('span', { class: `badge note-${n.state}`, text: n.state })),
      h('td', { class: 'num', text: n.attempts ?? 0 }), h('td', { class: 'num', text: n.last_status ?? '' }),
      h('td', { text: n.last_error || '' }), h('td', { text: formatTime(n.next_attempt) })))));
}

function taskView(main, args, query, ctx) {
  const taskId = args[0] || '';
  const title = h('h2', {}, 'Task ', h('span', { class: 'mono', text: taskId }), ' ');
  const state = h('span', { id: 'task-state' });
  title.append(state);
  const meta = h('div', { class: 'meta' });
  const barSlot = h('div', { id: 'task-progress' });
  const counts = h('div', { id: 'task-counts' });
  const cancel = needs('operator', h('button', { type: 'button', class: 'danger', id: 'cancel-task', text: 'Cancel task' }));
  const rerun = needs('operator', h('a', { href: `#/run?from=${encodeURIComponent(taskId)}`, id: 'rerun',
    text: 'Run again with the same parameters' }));
  const retry = needs('operator', h('button', { type: 'button', id: 'retry-task', text: 'Retry failed', hidden: true,
    title: 'a new task with the same script and parameters on the targets that FAILED or were CANCELLED' }));
  const error = viewError(ctx);
  const scriptPre = h('pre', { class: 'script' });
  const tbody = h('tbody');
  const rows = new Map();
  const stateFilter = h('select', { id: 'target-state-filter' }, h('option', { value: '', text: 'every state' }),
    STATES.map((s) => h('option', { value: s, text: `only ${s}` })));
  const textFilter = h('input', { type: 'search', id: 'target-filter', placeholder: 'filter: agent, host, output' });
  const shown = h('span', { class: 'muted', id: 'targets-shown' });
  const secretsBox = needs('operator', h('div', { id: 'retry-secrets', class: 'card', hidden: true }));
  const inputsSlot = h('div', { id: 'task-inputs', class: 'card two-col', hidden: true });
  const notifySlot = h('div', { id: 'task-notify' });
  let retrySecrets = null;
  let inputsShown = null;
  let notifyDue = null;

  main.append(title, meta, barSlot, counts,
    h('div', { class: 'actions' }, cancel, retry, rerun, lacking('operator', 'Cancelling, retrying or running again')),
    secretsBox, error, inputsSlot,
    h('details', { class: 'card' }, h('summary', { text: 'Script' }), scriptPre), notifySlot,
    h('div', { class: 'toolbar' }, stateFilter, textFilter, shown),
    h('table', { id: 'targets' },
      tableHead(['Agent', 'Host', 'State', 'Exit code', 'Duration', 'Output']),
      tbody));

  let armed = null;
  cancel.addEventListener('click', async () => {
    if (!armed) {  // two clicks: a stray click does not kill scripts on a fleet
      cancel.textContent = 'Click again to cancel';
      armed = later(ctx, () => { armed = null; cancel.textContent = 'Cancel task'; }, 4000);
      return;
    }
    clearTimeout(armed);
    ctx.timers.delete(armed);
    armed = null;
    cancel.disabled = true;
    cancel.textContent = 'Cancelling...';
    try {
      await api('POST', `/task/${encodeURIComponent(taskId)}/cancel`);
    } catch (err) {
      error.textContent = err.message;
    }
  });

  const retryKeys = requestKeys();
  retry.addEventListener('click', async () => {
    retry.disabled = true;
    clearErrors(secretsBox);
    error.textContent = '';
    try {
      // a secret's value is not kept once a task ends: the retry sends them again, typed in secretsBox
      const body = retrySecrets ? { params: retrySecrets.values() } : undefined;
      const made = await api('POST', `/task/${encodeURIComponent(taskId)}/retry`, body, retryKeys.for(body));
      retryKeys.done();
      location.hash = `#/task/${encodeURIComponent(made.task_id)}`;
    } catch (err) {
      showFieldError(secretsBox, err, error);
      retry.disabled = false;
    }
  });

  function targetRow(agentId) {
    const cells = {
      host: h('td', { class: 'hostname' }), state: h('td', { class: 'state' }), code: h('td', { class: 'num code' }),
      duration: h('td', { class: 'num' }), summary: h('summary'), output: h('pre', { class: 'output' }),
      whole: h('button', { type: 'button', class: 'whole-output', hidden: true }),
    };
    cells.whole.addEventListener('click', async () => {
      try {
        const one = await api('GET', `/task/${encodeURIComponent(taskId)}/target/${encodeURIComponent(agentId)}`);
        cells.wholeOutput = one.output;  // a finished target's output does not change any more
        cells.output.textContent = one.output;
        cells.whole.hidden = true;
        cells.summary.textContent = outputSummary(one, one.output);
      } catch (err) { error.textContent = err.message; }
    });
    cells.row = h('tr', { 'data-agent': agentId }, h('td', { class: 'mono', text: agentId }), cells.host, cells.state,
      cells.code, cells.duration, h('td', {}, h('details', {}, cells.summary, cells.whole, cells.output)));
    tbody.append(cells.row);
    return cells;
  }

  /** With a thousand hosts, the operator wants the failed ones, or those that printed a word. */
  function applyFilter() {
    const wanted = stateFilter.value;
    const text = textFilter.value.trim().toLowerCase();
    let visible = 0;
    for (const [agentId, cells] of rows) {
      const t = cells.target;
      const show = (!wanted || t.state === wanted)
        && (!text || `${agentId} ${t.hostname || ''} ${t.output}`.toLowerCase().includes(text));
      cells.row.hidden = !show;
      visible += show;
    }
    shown.textContent = `${visible} of ${rows.size} shown`;
  }
  stateFilter.addEventListener('change', applyFilter);
  textFilter.addEventListener('input', applyFilter);

  function render(task) {
    state.replaceChildren(stateBadge(task.state));
    setChildren(meta, [
      h('span', { text: `created ${formatTime(task.created)}` }),
      task.finished ? h('span', { text: `took ${formatDuration(task.started || task.created, task.finished)}` }) : null,
      h('span', { text: `parallel ${task.parallel}, fail_rate ${task.fail_rate} %, fail_count ${task.fail_count}, timeout ${task.timeout || 'none'}` }),
      task.batch_by ? h('span', { text: `by ${task.batch_by}: batch ${(task.batch ?? 0) + 1} of ${task.batches.length}` }) : null,
      task.job ? h('span', {}, 'job ', h('a', { href: `#/job/${encodeURIComponent(task.job)}`, text: `${task.job} v${task.job_version}` })) : null,
      task.retry_of ? h('span', { id: 'retry-of' }, 'retry of ', taskLink(task.retry_of)) : null,
      task.schedule_id ? h('span', { id: 'task-schedule' }, 'fired by schedule ', scheduleLink(task.schedule_id),
        task.schedule_tick ? ` at ${formatTime(task.schedule_tick)}` : '') : null]);
    renderInputs(task);
    const notes = task.notifications || [];
    notifySlot.replaceChildren(...(notes.length ? [h('h3', { text: 'Notifications' }), notificationsTable(notes)] : []));
    barSlot.replaceChildren(progressBar(task.counts, task.total));
    counts.replaceChildren(countsText(task.counts), h('span', { class: 'muted', text: `${task.total} targets` }));
    if (scriptPre.textContent !== task.script) scriptPre.textContent = task.script;
    const done = Boolean(task.finished) && !task.counts.RUNNING;
    if (task.finished) { cancel.disabled = true; cancel.textContent = 'Cancel task'; }
    retry.hidden = !(done && (task.counts.FAILED || task.counts.CANCELLED));
    secretsBox.hidden = retry.hidden || !retrySecrets;
    if (done && notes.some((n) => n.state === 'pending') && notifyDue === null) {
      notifyDue = later(ctx, () => { notifyDue = null; load().catch(ctx.showError); }, NOTIFY_REFRESH_MS);
    }
    for (const [agentId, target] of Object.entries(task.targets)) {
      const cells = rows.get(agentId) || rows.set(agentId, targetRow(agentId)).get(agentId);
      cells.target = target;
      cells.host.textContent = target.hostname || '';
      if (cells.state.textContent !== target.state) cells.state.replaceChildren(stateBadge(target.state));
      cells.code.textContent = target.code ?? '';
      cells.duration.textContent = target.state === 'RUNNING' ? runningFor(target)
        : target.started ? formatDuration(target.started, target.finished) : (target.state === 'WAITING' ? '' : 'never started');
      if (cells.wholeOutput === undefined) {
        cells.summary.textContent = outputSummary(target, target.output);
        if (cells.output.textContent !== target.output) cells.output.textContent = target.output;
        cells.whole.hidden = !target.output_omitted;
        cells.whole.textContent = `Load all ${formatBytes(target.output_bytes)}`;
      }
      // a failure's output is what the operator came for: show it once, without a click
      if (target.state === 'FAILED' && !cells.shownFailure) {
        cells.shownFailure = true;
        cells.output.parentElement.open = true;
      }
    }
    applyFilter();
    main.dataset.done = done ? 'yes' : 'no';
    return done;
  }

  /** The parameters and environment the task ran with; secrets it had make Retry and Run again ask for them. */
  function renderInputs(task) {
    const params = task.params || {};
    // a job run's parameters are its environment variables: listed once, under Parameters
    const env = Object.fromEntries(Object.entries(task.env || {}).filter(([k]) => !(k in params)));
    const secrets = task.secrets || [];
    const key = JSON.stringify([params, env, secrets, task.job, task.job_version]);
    if (inputsShown === key) return;
    inputsShown = key;
    inputsSlot.hidden = !Object.keys(params).length && !Object.keys(env).length;
    setChildren(inputsSlot, [
      Object.keys(params).length ? h('div', {}, h('h3', { text: 'Parameters' }), valuesTable('task-params', params, secrets)) : null,
      Object.keys(env).length ? h('div', {}, h('h3', { text: 'Environment' }), valuesTable('task-env', env, secrets)) : null]);
    if (task.job) {  // a job's run again: the job run form, with these params and hosts
      rerun.href = `#/job/${encodeURIComponent(task.job)}?v=${task.job_version}&from=${encodeURIComponent(taskId)}`;
    }
    if (secrets.length && !retrySecrets) {
      retrySecrets = paramInputs('retry', secrets.map((name) => ({ name, secret: true, required: true })), {}, secrets);
      setChildren(secretsBox, [h('p', { class: 'muted', text: 'Retry needs the secret parameters again:' }), retrySecrets.fields]);
    }
  }

  const load = async () => {
    const task = await api('GET', `/task/${encodeURIComponent(taskId)}?output_limit=${OUTPUT_TAIL_BYTES}`);
    error.textContent = '';
    return !render(task);
  };

  // live: the event stream feeds running targets' output, states and counts; a target that ends, and the
  // task's end, bring one fetch of the task (its stored outputs). Should the stream fail: polling, as before.
  let skew = 0;
  let reloadDue = null;
  function runningFor(target) {
    return target.started ? `running ${Math.max(0, Math.round(Date.now() / 1000 + skew - target.started))} s` : 'running';
  }
  const reloadSoon = () => {
    if (reloadDue === null) reloadDue = later(ctx, () => { reloadDue = null; load().catch(ctx.showError); }, TASK_RELOAD_MS);
  };
  function onEvent(name, data) {
    if (name === 'open') { skew = data.skew; main.dataset.live = 'stream'; return; }
    if (name === 'snapshot') {  // newer than the fetch before the stream: what happened in between
      onEvent('task', data.task);
      for (const target of Object.values(data.targets)) {
        const cells = rows.get(target.agent_id);
        if (cells && cells.target && cells.target.state !== target.state) onEvent('target', target);
        if (target.output !== undefined) onEvent('output', { agent_id: target.agent_id, offset: target.offset, data: target.output });
      }
    } else if (name === 'output') {
      const cells = rows.get(data.agent_id);
      if (!cells || !cells.target || cells.wholeOutput !== undefined) return;
      // offsets count bytes: skip what the page has already (from the fetch, or an overlapping snapshot)
      const bytes = new TextEncoder().encode(data.data);
      const have = cells.target.output_bytes || 0;
      if (data.offset + bytes.length <= have) return;
      const added = data.offset < have ? new TextDecoder().decode(bytes.subarray(have - data.offset)) : data.data;
      const text = (cells.target.output + added).slice(-OUTPUT_TAIL_BYTES);
      cells.target = { ...cells.target, output: text, output_bytes: data.offset + bytes.length };
      cells.output.textContent = text;
      cells.summary.textContent = outputSummary({ ...cells.target, output_omitted: 0 }, text);
      cells.output.parentElement.open = true;  // a running target's output opens by itself
      cells.row.dataset.live = 'yes';
    } else if (name === 'target') {
      const cells = rows.get(data.agent_id);
      if (!cells) return;
      cells.target = { ...cells.target, ...data };
      if (cells.state.textContent !== data.state) cells.state.replaceChildren(stateBadge(data.state));
      cells.code.textContent = data.code ?? '';
      if (data.state === 'RUNNING') cells.duration.textContent = runningFor(cells.target);
      else reloadSoon();
    } else if (name === 'task') {
      state.replaceChildren(stateBadge(data.state));
      barSlot.replaceChildren(progressBar(data.counts, data.total));
      counts.replaceChildren(countsText(data.counts), h('span', { class: 'muted', text: `${data.total} targets` }));
    }
  }
  every(ctx, 1000, () => {  // the elapsed time of running targets, from the page's own clock
    for (const cells of rows.values()) {
      if (cells.target && cells.target.state === 'RUNNING') cells.duration.textContent = runningFor(cells.target);
    }
  });
  (async () => {
    let running;
    try {
      running = await load();
    } catch (err) {
      ctx.showError(err);
      if (err.status !== 404 && ctx.alive) later(ctx, () => every(ctx, TASK_REFRESH_MS, load), TASK_REFRESH_MS);
      return;  // gone (a pruned task, say) stays gone
    }
    if (!running || !ctx.alive) return;
    const ended = await followEvents(ctx, `/task/${encodeURIComponent(taskId)}/events`, onEvent);
    if (!ctx.alive) return;
    if (!ended) main.dataset.live = 'polling';
    every(ctx, TASK_REFRESH_MS, load);  // after the end: once (its final outputs); after a failure: polling
  })();
}

// ---- history ---------------------------------------------------------------------------------------------

function historyView(main, args, query, ctx) {
  const stateSelect = h('select', { id: 'history-state' }, h('option', { value: '', text: 'any state' }),
    STATES.map((s) => h('option', { value: s, text: s })));
  const jobInput = h('input', { type: 'text', id: 'history-job', placeholder: 'job name' });
  const newer = h('button', { type: 'button', text: 'Newest' });
  const older = h('button', { type: 'button', text: 'Older' });
  const tbody = h('tbody');
  const error = viewError(ctx);
  const pages = [];  // the `before` of each page shown so far; empty: the newest page, refreshed live

  main.append(h('h2', { text: 'History' }),
    h('div', { class: 'toolbar' }, stateSelect, jobInput, h('span', { class: 'spacer' }), newer, older), error,
    h('table', { id: 'history' },
      tableHead(['Task', 'Created', 'State', 'Progress', 'Targets', 'Job']),
      tbody));

  let last = [];
  async function load() {
    const params = new URLSearchParams({ limit: String(HISTORY_PAGE) });
    if (stateSelect.value) params.set('state', stateSelect.value);
    if (jobInput.value.trim()) params.set('job', jobInput.value.trim());
    if (pages.length) params.set('before', String(pages[pages.length - 1]));
    last = await api('GET', `/tasks?${params}`);
    error.textContent = '';
    tbody.replaceChildren(...last.map((t) => h('tr', { 'data-task': t.task_id },
      h('td', {}, taskLink(t.task_id)),
      h('td', { text: formatTime(t.created) }),
      h('td', {}, stateBadge(t.state)),
      h('td', {}, progressBar(t.counts, t.total, true), countsText(t.counts)),
      h('td', { class: 'num', text: t.total }),
      h('td', {}, t.job ? h('a', { href: `#/job/${encodeURIComponent(t.job)}`, text: `${t.job} v${t.job_version}` }) : ''))));
    if (!last.length) tbody.append(h('tr', {}, h('td', { colspan: 6, class: 'empty', text: 'No task here.' })));
    older.disabled = last.length < HISTORY_PAGE;
    newer.disabled = !pages.length;
  }
  older.addEventListener('click', () => { if (last.length) { pages.push(last[last.length - 1].created); load().catch(ctx.showError); } });
  newer.addEventListener('click', () => { pages.length = 0; load().catch(ctx.showError); });
  stateSelect.addEventListener('change', () => { pages.length = 0; load().catch(ctx.showError); });
  jobInput.addEventListener('change', () => { pages.length = 0; load().catch(ctx.showError); });
  every(ctx, HISTORY_REFRESH_MS, async () => { if (!pages.length) await load(); return true; });
}

// ---- jobs ----------------------------------------------------------------------------------------------

async function saveJobVersion(name, body, note) {
  const saved = await api('POST', `/job/${encodeURIComponent(name)}`, body);
  note.textContent = saved.created ? `Saved ${saved.name} version ${saved.version}.` : saved.note;
  return saved;
}

function jobsView(main, args, query, ctx) {
  const tbody = h('tbody');
  const error = viewError(ctx);
  const nameInput = h('input', { type: 'text', id: 'new-job-name', placeholder: 'deploy-web', autocomplete: 'off' });
  const nameError = h('p', { class: 'error', 'data-error-for': 'name' });
  const { form } = taskForm({
    id: 'new-job-form', submitLabel: 'Save job', withMessage: true, role: 'admin', what: 'Saving a job',
    onSubmit: async (body, { note }) => {
      const name = nameInput.value.trim();
      nameError.textContent = '';
      if (!name) { nameError.textContent = 'name: empty'; return; }
      try {
        await saveJobVersion(name, body, note);
      } catch (err) {
        if (err.field === 'name') { nameError.textContent = err.message; return; }
        throw err;
      }
      location.hash = `#/job/${encodeURIComponent(name)}`;
    },
  });
  main.append(h('h2', { text: 'Jobs' }), error,
    h('table', { id: 'jobs' },
      tableHead(['Job', 'Latest version', 'Saved', 'Message']), tbody),
    needs('admin', h('h3', { id: 'new-job-heading', text: 'New job' })),
    needs('admin', h('div', { class: 'card', id: 'new-job' },
      h('div', { class: 'field' }, h('label', { for: 'new-job-name', text: 'Name' }), nameInput, nameError), form)),
    lacking('admin', 'Saving a job'));

  api('GET', '/jobs').then((jobs) => {
    tbody.replaceChildren(...jobs.map((j) => h('tr', { 'data-job': j.name },
      h('td', {}, h('a', { href: `#/job/${encodeURIComponent(j.name)}`, text: j.name })),
      h('td', { class: 'num', text: j.version }), h('td', { text: formatTime(j.created_at) }), h('td', { text: j.message }))));
    if (!jobs.length) tbody.append(h('tr', {}, h('td', { colspan: 4, class: 'empty', text: 'No job saved yet.' })));
  }).catch(ctx.showError);
}

function diffBlock(text) {
  return h('pre', { class: 'diff', id: 'job-diff' }, text.split('\n').map((line) => {
    const kind = line.startsWith('@@') ? 'hunk' : line.startsWith('+') ? 'add' : line.startsWith('-') ? 'del' : '';
    return h('span', { class: kind, text: `${line}\n` });
  }));
}

function jobView(main, args, query, ctx) {
  const name = args[0] || '';
  const path = `/job/${encodeURIComponent(name)}`;
  const error = viewError(ctx);
  const versionsBody = h('tbody');
  const diffButton = h('button', { type: 'button', id: 'show-diff', text: 'Diff' });
  const diffSlot = h('div', { id: 'diff-slot' });
  const versionSlot = h('div', { class: 'card', id: 'version-detail' });
  const { form, fill } = taskForm({
    id: 'job-form', submitLabel: 'Save new version', withMessage: true, role: 'admin', what: 'Saving a job',
    onSubmit: async (body, { note }) => {
      const saved = await saveJobVersion(name, body, note);
      if (saved.created) fill({ message: '' });
      await loadVersions(saved.version);
    },
  });
  const schedulesBody = h('tbody');
  const newSchedule = needs('admin', h('a', { href: `#/schedules?job=${encodeURIComponent(name)}`, id: 'new-schedule',
    class: 'button', text: 'New schedule' }));
  main.append(h('h2', {}, 'Job ', h('span', { class: 'mono', text: name })), error,
    h('table', { id: 'versions' }, tableHead(['Version', 'Saved', 'Message', 'sha256', 'from', 'to', '']), versionsBody),
    h('div', { class: 'actions' }, diffButton, h('span', { class: 'muted', text: 'pick two versions, then Diff' })),
    diffSlot, h('h3', { text: 'Version' }), versionSlot,
    h('h3', { text: 'Schedules' }),
    h('table', { id: 'job-schedules' }, tableHead(['Schedule', 'Cron', 'Timezone', 'Next run', 'Last run', 'Enabled']), schedulesBody),
    h('div', { class: 'actions' }, newSchedule),
    needs('admin', h('h3', { id: 'save-version-heading', text: 'Save a new version' })), needs('admin', form),
    lacking('admin', 'Saving a new version'));

  // "Run again" of a job task comes here: that version's run form, with the task's params and hosts
  const fromTask = query.get('from');
  let rerunOf = null;

  async function showVersion(version) {
    const job = await api('GET', `${path}/versions/${version}`);
    const runError = errorBox();
    const runButton = needs('operator', h('button', { type: 'submit', class: 'primary', id: 'run-version',
      text: `Run version ${job.version}` }));
    const who = selection.size ? `on the ${selection.size} agent(s) ticked in Agents` : "on the job's own targets";
    const p = job.params || {};
    const again = rerunOf && rerunOf.job_version === job.version ? rerunOf : null;
    const inputs = paramInputs('run', p.params || [], again ? again.params || {} : {}, again ? again.secrets || [] : []);
    const runForm = h('form', { id: 'run-version-form', novalidate: true },
      again ? h('p', { class: 'muted', id: 'rerun-of' }, 'Again, with the parameters and hosts of task ', taskLink(again.task_id), '.') : null,
      inputs.fields.length ? h('fieldset', { id: 'run-params' }, h('legend', { text: 'Parameters' }), inputs.fields) : null,
      h('div', { class: 'actions' }, runButton, needs('operator', h('span', { class: 'muted', text: who })),
        lacking('operator', 'Running a job')), runError);
    const runKeys = requestKeys();
    runForm.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearErrors(runForm);
      const body = { version: job.version };
      if (selection.size) body.targets = [...selection];
      const values = inputs.values();
      if (Object.keys(values).length) body.params = values;
      runButton.disabled = true;
      try {
        const started = await api('POST', `${path}/run`, body, runKeys.for(body));
        runKeys.done();
        location.hash = `#/task/${encodeURIComponent(started.task_id)}`;
      } catch (err) {
        showFieldError(runForm, err, runError);
      } finally {
        runButton.disabled = false;
      }
    });
    setChildren(versionSlot, [
      h('div', { class: 'meta' }, h('span', { text: `version ${job.version}` }), h('span', { text: formatTime(job.created_at) }),
        h('span', { text: job.message || '' })),
      h('div', { class: 'meta' }, h('span', { text: `parallel ${p.parallel}, fail_rate ${p.fail_rate} %, fail_count ${p.fail_count}, timeout ${p.timeout || 'none'}` }),
        p.targets && p.targets.length ? h('span', { text: `targets ${p.targets.join(' ')}` }) : null,
        p.selector ? h('span', { text: `selector ${JSON.stringify(p.selector)}` }) : null),
      h('pre', { class: 'script', id: 'version-script', text: job.script }), runForm]);
    return job;
  }

  async function loadSchedules() {
    const list = await api('GET', `/schedules?job=${encodeURIComponent(name)}`);
    schedulesBody.replaceChildren(...list.map((sc) => h('tr', { 'data-schedule': sc.schedule_id },
      h('td', {}, scheduleLink(sc.schedule_id)), h('td', { class: 'mono', text: sc.cron }), h('td', { text: sc.timezone }),
      h('td', {}, nextRunText(sc)), h('td', {}, lastRun(sc)), h('td', {}, enabledBadge(sc.enabled)))));
    if (!list.length) schedulesBody.append(h('tr', {}, h('td', { colspan: 6, class: 'empty', text: 'No schedule runs this job.' })));
  }

  /** The versions table and one version shown; ``fillForm``: the editor starts from the newest version. */
  async function loadVersions(show, fillForm = false) {
    const versions = await api('GET', `${path}/versions`);
    const newest = versions[versions.length - 1].version;
    versionsBody.replaceChildren(...versions.map((v) => h('tr', { 'data-version': v.version },
      h('td', { class: 'num', text: v.version }), h('td', { text: formatTime(v.created_at) }), h('td', { text: v.message }),
      h('td', { class: 'mono', text: v.sha256.slice(0, 12) }),
      h('td', {}, h('input', { type: 'radio', name: 'diff-from', value: String(v.version), checked: v.version === Math.max(1, newest - 1), 'aria-label': `diff from ${v.version}` })),
      h('td', {}, h('input', { type: 'radio', name: 'diff-to', value: String(v.version), checked: v.version === newest, 'aria-label': `diff to ${v.version}` })),
      h('td', {}, h('button', { type: 'button', class: 'link-view', text: 'view', onclick: () => showVersion(v.version).catch(ctx.showError) })))));
    const shown = await showVersion(show || newest);
    if (fillForm) {  // a link to an older version (?v=) still edits from the newest
      const latest = shown.version === newest ? shown : await api('GET', `${path}/versions/${newest}`);
      fill({ ...formValuesFrom(latest.script, latest.params || {}, null), message: '' });
    }
  }

  diffButton.addEventListener('click', async () => {
    const from = $('input[name=diff-from]:checked', main);
    const to = $('input[name=diff-to]:checked', main);
    if (!from || !to) return;
    try {
      const diff = await api('GET', `${path}/diff?from=${from.value}&to=${to.value}`);
      setChildren(diffSlot, [
        diff.script_diff ? diffBlock(diff.script_diff) : h('p', { class: 'muted', text: 'The scripts are the same.' }),
        diff.params.length ? h('table', { id: 'param-diff' }, tableHead(['Parameter', `v${diff.from}`, `v${diff.to}`]),
          h('tbody', {}, diff.params.map((c) => h('tr', {}, h('td', { text: c.param }), h('td', { class: 'mono', text: JSON.stringify(c.from) }),
            h('td', { class: 'mono', text: JSON.stringify(c.to) }))))) : h('p', { class: 'muted', text: 'No parameter changed.' })]);
    } catch (err) { diffSlot.replaceChildren(h('p', { class: 'error', text: err.message })); }
  });
  (async () => {
    if (fromTask) {
      try {
        rerunOf = await api('GET', `/task/${encodeURIComponent(fromTask)}?output_limit=0`);
        setSelection(Object.keys(rerunOf.targets));  // the same hosts, as the Run view's "again" does
      } catch (err) {
        ctx.showError(err);  // "task ... not found" (pruned, say): the job's page still shows
      }
    }
    await loadVersions(Number(query.get('v')) || 0, true);
  })().catch(ctx.showError);
  loadSchedules().catch(ctx.showError);
}

// ---- schedules -----------------------------------------------------------------------------------------

/** "2026-12-01T15:30:00+01:00" as "2026-12-01 15:30:00 +01:00": a time in the schedule's own timezone. */
function formatLocal(iso) {
  return iso ? iso.replace('T', ' ').replace(/(Z|[+-]\d\d:?\d\d)$/, ' $1') : '';
}

/** Unix seconds as "2026-12-01 15:30:00" in the time zone ``tz``: a schedule's ticks, as its cron sees them. */
function formatIn(seconds, tz) {
  if (!seconds) return '';
  try {
    const parts = Object.fromEntries(new Intl.DateTimeFormat('en-GB', { timeZone: tz, hourCycle: 'h23', year: 'numeric',
      month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' })
      .formatToParts(new Date(seconds * 1000)).map((p) => [p.type, p.value]));
    return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}:${parts.second}`;
  } catch {
    return formatTime(seconds);  // a zone this browser does not know: its own time
  }
}

function nextRunText(sc) {
  if (!sc.enabled) return h('span', { class: 'muted', text: 'disabled' });
  if (!sc.next_run_local) return h('span', { class: 'muted', text: 'none' });
  return h('span', { class: 'next-run', title: `${formatTime(sc.next_run)} in this browser's time` },
    `${formatLocal(sc.next_run_local)} `, h('span', { class: 'muted', text: sc.timezone }));
}

function lastRun(sc) {
  if (!sc.last_task_id) return h('span', { class: 'muted', text: 'not run yet' });
  return h('span', {}, sc.last_state ? stateBadge(sc.last_state) : null, ' ', taskLink(sc.last_task_id));
}

function enabledBadge(enabled) {
  return h('span', { class: `badge ${enabled ? 'enabled' : 'disabled'}`, text: enabled ? 'enabled' : 'disabled' });
}

/**
 * Enable/Disable (``PATCH {"enabled": ...}``) and Delete (two clicks) of one schedule; ``done`` runs after
 * each change (a refresh, or leaving a deleted schedule's page). Errors go to ``error``.
 */
function scheduleButtons(ctx, sc, error, done, deleted) {
  const path = `/schedule/${encodeURIComponent(sc.schedule_id)}`;
  const toggle = needs('operator', h('button', { type: 'button', class: 'toggle-schedule', text: sc.enabled ? 'Disable' : 'Enable' }));
  const remove = needs('admin', h('button', { type: 'button', class: 'danger delete-schedule', text: 'Delete' }));
  toggle.addEventListener('click', async () => {
    toggle.disabled = true;
    try {
      await api('PATCH', path, { enabled: !sc.enabled });
      error.textContent = '';
      await done();
    } catch (err) { error.textContent = err.message; toggle.disabled = false; }
  });
  let armed = null;
  remove.addEventListener('click', async () => {
    if (!armed) {  // two clicks: a stray click does not drop a schedule
      remove.textContent = 'Click again to delete';
      armed = later(ctx, () => { armed = null; remove.textContent = 'Delete'; }, 4000);
      return;
    }
    clearTimeout(armed);
    ctx.timers.delete(armed);
    armed = null;
    remove.disabled = true;
    try {
      await api('DELETE', path);
      error.textContent = '';
      await (deleted || done)();
    } catch (err) { error.textContent = err.message; remove.disabled = false; }
  });
  return [toggle, remove];
}

/** A new schedule of a job: the job's declared parameters get their inputs once the job is picked. */
function scheduleForm(ctx, wantJob, onCreated) {
  const id = 'schedule-form';
  const job = h('select', { id: `${id}-job`, name: 'job' }, h('option', { value: '', text: '(pick a job)' }));
  const cron = h('input', { type: 'text', id: `${id}-cron`, name: 'cron', class: 'mono', placeholder: '*/5 * * * *', autocomplete: 'off' });
  const timezone = h('input', { type: 'text', id: `${id}-timezone`, name: 'timezone', value: 'UTC', list: `${id}-zones`, autocomplete: 'off' });
  const zones = h('datalist', { id: `${id}-zones` },
    (Intl.supportedValuesOf ? Intl.supportedValuesOf('timeZone') : []).map((z) => h('option', { value: z })));
  const overlap = h('select', { id: `${id}-overlap`, name: 'overlap' }, ['skip', 'queue', 'allow'].map((v) => h('option', { value: v, text: v })));
  const catchup = h('select', { id: `${id}-catchup`, name: 'catchup' }, ['none', 'last'].map((v) => h('option', { value: v, text: v })));
  const description = h('input', { type: 'text', id: `${id}-description`, name: 'description', autocomplete: 'off' });
  const paramsSlot = h('div', { id: `${id}-params` });
  const general = errorBox();
  const note = h('p', { class: 'note' });
  const submit = needs('admin', h('button', { type: 'submit', class: 'primary', text: 'Create schedule' }));
  let inputs = paramInputs(id, []);
  const form = h('form', { id, class: 'card', novalidate: true },
    h('div', { class: 'two-col' },
      h('div', {},
        field('job', 'Job', job, 'It runs the latest version of the job at each firing, on its own targets.'),
        field('cron', 'Cron', cron, 'Five fields (minute hour day month weekday), or @hourly, @daily, @weekly, @monthly, @yearly.'),
        field('timezone', 'Timezone', timezone, `The cron's times are in this timezone (this browser's: ${Intl.DateTimeFormat().resolvedOptions().timeZone}).`),
        zones,
        field('description', 'Description', description, 'Optional.')),
      h('div', {},
        field('overlap', 'Overlap', overlap, 'When the last run has not ended: skip this firing, queue it, or allow both.'),
        field('catchup', 'Catch up', catchup, 'Firings missed while the master was down: none, or run the last one.'),
        paramsSlot)),
    general, note, h('div', { class: 'actions' }, submit));

  async function pickJob() {
    inputs = paramInputs(id, []);
    paramsSlot.replaceChildren();
    if (!job.value) return;
    const detail = await api('GET', `/job/${encodeURIComponent(job.value)}`);
    if (job.value !== detail.name) return;  // picked another meanwhile
    inputs = paramInputs(id, (detail.params || {}).params || []);
    if (inputs.fields.length) paramsSlot.replaceChildren(h('fieldset', {}, h('legend', { text: 'Parameters' }), inputs.fields));
  }
  job.addEventListener('change', () => pickJob().catch((err) => { general.textContent = err.message; }));
  api('GET', '/jobs').then((jobs) => {
    job.append(...jobs.map((j) => h('option', { value: j.name, text: j.name })));
    if (wantJob) { job.value = wantJob; pickJob().catch((err) => { general.textContent = err.message; }); }
  }).catch((err) => { general.textContent = err.message; });

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    note.textContent = '';
    const body = { job: job.value, cron: cron.value.trim(), timezone: timezone.value.trim(), overlap: overlap.value, catchup: catchup.value };
    if (description.value.trim()) body.description = description.value.trim();
    const values = inputs.values();
    if (Object.keys(values).length) body.params = values;
    submit.disabled = true;
    try {
      const made = await api('POST', '/schedules', body);
      note.textContent = `Created schedule ${made.schedule_id}.`;
      await onCreated(made.schedule_id);
    } catch (err) {
      showFieldError(form, err, general);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function schedulesView(main, args, query, ctx) {
  const tbody = h('tbody');
  const error = viewError(ctx);
  const want = query.get('job');
  const form = scheduleForm(ctx, want, () => load());
  main.append(h('h2', { text: 'Schedules' }), error,
    h('table', { id: 'schedules' },
      tableHead(['Schedule', 'Job', 'Cron', 'Timezone', 'Next run', 'Last run', 'Enabled', '']), tbody),
    needs('admin', h('h3', { id: 'new-schedule-heading', text: 'New schedule from a job' })), needs('admin', form),
    lacking('admin', 'Creating a schedule'));

  let listed = '';
  async function load() {
    const list = await api('GET', '/schedules');
    error.textContent = '';
    const text = JSON.stringify(list);
    if (text === listed) return;  // unchanged: a half-done two-click Delete survives the refresh
    listed = text;
    tbody.replaceChildren(...list.map((sc) => h('tr', { 'data-schedule': sc.schedule_id, class: sc.enabled ? null : 'disabled' },
      h('td', {}, scheduleLink(sc.schedule_id), sc.description ? h('div', { class: 'muted', text: sc.description }) : null),
      h('td', {}, h('a', { href: `#/job/${encodeURIComponent(sc.job)}`, text: sc.version ? `${sc.job} v${sc.version}` : sc.job })),
      h('td', { class: 'mono cron', text: sc.cron }), h('td', { text: sc.timezone }),
      h('td', { class: 'next' }, nextRunText(sc)), h('td', { class: 'last' }, lastRun(sc)),
      h('td', { class: 'enabled' }, enabledBadge(sc.enabled)),
      h('td', { class: 'actions-cell' }, scheduleButtons(ctx, sc, error, () => { listed = ''; return load(); })))));
    if (!list.length) tbody.append(h('tr', {}, h('td', { colspan: 8, class: 'empty', text: 'No schedule yet.' })));
  }
  if (want) later(ctx, () => form.scrollIntoView(), 0);
  every(ctx, SCHEDULES_REFRESH_MS, async () => { await load(); return true; });
}

function scheduleView(main, args, query, ctx) {
  const scheduleId = args[0] || '';
  const title = h('h2', {}, 'Schedule ', h('span', { class: 'mono', text: scheduleId }), ' ');
  const badge = h('span', { id: 'schedule-enabled' });
  title.append(badge);
  const error = viewError(ctx);
  const meta = h('div', { class: 'meta', id: 'schedule-meta' });
  const actions = h('div', { class: 'actions' });
  const nextRuns = h('ol', { id: 'next-runs', class: 'mono' });
  const runsBody = h('tbody');
  const skipsBody = h('tbody');
  const paramsSlot = h('div');
  const tickHeads = [];
  const tickHead = () => { const th = h('span', { text: 'Tick' }); tickHeads.push(th); return th; };
  main.append(title, meta, actions, error, paramsSlot,
    h('div', { class: 'two-col' },
      h('div', {}, h('h3', { text: 'Next runs' }), nextRuns),
      h('div', {}, h('h3', { text: 'Skipped' }), h('table', { id: 'schedule-skips' }, tableHead([tickHead(), 'Reason']), skipsBody))),
    h('h3', { text: 'Last runs' }), h('table', { id: 'schedule-runs' }, tableHead([tickHead(), 'Task', 'State']), runsBody));

  let shown = '';
  async function load() {
    const sc = await api('GET', `/schedule/${encodeURIComponent(scheduleId)}`);
    error.textContent = '';
    const text = JSON.stringify(sc);
    if (text === shown) return;
    shown = text;
    badge.replaceChildren(enabledBadge(sc.enabled));
    tickHeads.forEach((th) => { th.textContent = `Tick (${sc.timezone})`; });
    setChildren(meta, [
      h('span', {}, 'job ', h('a', { href: `#/job/${encodeURIComponent(sc.job)}`, text: sc.version ? `${sc.job} v${sc.version}` : `${sc.job} (latest)` })),
      h('span', { class: 'mono', text: `cron ${sc.cron}` }), h('span', { text: sc.timezone }),
      h('span', { text: `overlap ${sc.overlap}, catchup ${sc.catchup}` }),
      h('span', { text: `fired ${sc.fired}, skipped ${sc.skipped}, missed ${sc.missed}` }),
      sc.targets && sc.targets.length ? h('span', { text: `targets ${sc.targets.join(' ')}` }) : null,
      sc.selector ? h('span', { text: `selector ${JSON.stringify(sc.selector)}` }) : null,
      sc.description ? h('span', { text: sc.description }) : null,
      h('span', { text: `created ${formatTime(sc.created)}` })]);
    actions.replaceChildren(...scheduleButtons(ctx, sc, error, () => { shown = ''; return load(); },
      () => { location.hash = '#/schedules'; }));
    setChildren(paramsSlot, Object.keys(sc.params || {}).length
      ? h('div', { class: 'card' }, h('h3', { text: 'Parameters' }), valuesTable('schedule-params', sc.params, [])) : null);
    nextRuns.replaceChildren(...(sc.enabled ? (sc.next_runs || []).map((t) => h('li', { text: formatLocal(t) }))
      : [h('li', { class: 'muted', text: 'disabled: no run is due' })]));
    runsBody.replaceChildren(...(sc.runs || []).map((r) => h('tr', { 'data-task': r.task_id || '' },
      h('td', { text: formatIn(r.tick, sc.timezone) }), h('td', {}, r.task_id ? taskLink(r.task_id) : ''),
      h('td', {}, r.state ? stateBadge(r.state) : ''))));
    if (!(sc.runs || []).length) runsBody.append(h('tr', {}, h('td', { colspan: 3, class: 'empty', text: 'Not run yet.' })));
    skipsBody.replaceChildren(...(sc.skips || []).map((k) => h('tr', { 'data-reason': k.reason }, h('td', { text: formatIn(k.tick, sc.timezone) }),
      h('td', { text: k.count > 1 ? `${k.reason} (${k.count} ticks)` : k.reason }))));
    if (!(sc.skips || []).length) skipsBody.append(h('tr', {}, h('td', { colspan: 2, class: 'empty', text: 'None skipped.' })));
  }
  every(ctx, SCHEDULES_REFRESH_MS, async () => { await load(); return true; });
}

// ---- the audit trail (admins) ---------------------------------------------------------------------------

const AUDIT_ACTIONS = ['task.submit', 'task.cancel', 'task.retry', 'job.run', 'job.save', 'job.rollback', 'key.accept',
  'key.reject', 'key.delete', 'group.put', 'group.delete', 'schedule.create', 'schedule.update', 'schedule.enable',
  'schedule.disable', 'schedule.delete', 'token.create', 'token.delete'];
const AUDIT_PAGE = 100;

/** The object of an audit record, a link where the console has a page for it (a task, a job, a schedule). */
function auditObject(entry) {
  const object = entry.object;
  if (!object) return '';
  const kind = entry.action.split('.')[0];
  if (kind === 'task') return taskLink(object);
  if (kind === 'schedule') return scheduleLink(object);
  if (kind === 'job') return h('a', { href: `#/job/${encodeURIComponent(object)}`, class: 'mono', text: object });
  return h('span', { class: 'mono', text: object });
}

/**
 * ``GET /audit``, newest first, filtered by user, action and since, 100 at a time: "Load more" asks for the
 * records older than the last one shown (``before``: its seq) and adds them below.
 */
function auditView(main, args, query, ctx) {
  const userInput = h('input', { type: 'text', id: 'audit-user', placeholder: 'user', autocomplete: 'off', 'aria-label': 'user' });
  const actionSelect = h('select', { id: 'audit-action', 'aria-label': 'action' }, h('option', { value: '', text: 'any action' }),
    AUDIT_ACTIONS.map((a) => h('option', { value: a, text: a })));
  const sinceInput = h('input', { type: 'datetime-local', id: 'audit-since', step: 1, 'aria-label': "since (this browser's time)",
    title: "since (this browser's time)" });
  const refresh = h('button', { type: 'button', id: 'audit-refresh', text: 'Refresh' });
  const more = h('button', { type: 'button', id: 'audit-more', text: 'Load more', hidden: true });
  const shown = h('span', { class: 'muted', id: 'audit-shown' });
  const tbody = h('tbody');
  const error = viewError(ctx);
  let rows = 0;
  let oldest = null;  // the seq of the last record shown: the next page is older
  main.append(h('h2', { text: 'Audit' }),
    h('div', { class: 'toolbar' }, userInput, actionSelect, h('label', {}, 'since ', sinceInput), refresh, shown), error,
    h('table', { id: 'audit' },
      tableHead(['Time', 'User', 'Role', 'Action', 'Object', 'Client', 'Status', 'Outcome']), tbody),
    h('div', { class: 'actions' }, more));

  async function load(next = false) {
    const params = new URLSearchParams({ limit: String(AUDIT_PAGE) });
    if (next && oldest !== null) params.set('before', String(oldest));
    if (userInput.value.trim()) params.set('user', userInput.value.trim());
    if (actionSelect.value) params.set('action', actionSelect.value);
    const since = sinceInput.value ? new Date(sinceInput.value).getTime() / 1000 : NaN;
    if (Number.isFinite(since)) params.set('since', String(since));
    const list = await api('GET', `/audit?${params}`);
    error.textContent = '';
    const made = list.map((e) => h('tr', { 'data-seq': e.seq ?? '', 'data-action': e.action, 'data-user': e.user },
      h('td', { text: formatTime(e.time) }), h('td', { class: 'user', text: e.user }), h('td', { text: e.role || '' }),
      h('td', { class: 'mono action', text: e.action,
        title: e.detail && Object.keys(e.detail).length ? JSON.stringify(e.detail) : null }),
      h('td', { class: 'object' }, auditObject(e)), h('td', { class: 'mono', text: e.client || '' }),
      h('td', { class: 'num', text: e.status ?? '' }),
      h('td', {}, h('span', { class: `badge outcome-${e.outcome}`, text: e.outcome || '' }))));
    if (next) {
      tbody.append(...made);
      rows += list.length;
    } else {
      tbody.replaceChildren(...made);
      rows = list.length;
    }
    if (list.length) oldest = list[list.length - 1].seq;
    if (!rows) tbody.append(h('tr', {}, h('td', { colspan: 8, class: 'empty', text: 'No record matches.' })));
    shown.textContent = `${rows} record${rows === 1 ? '' : 's'}, newest first`;
    more.hidden = list.length < AUDIT_PAGE;
    main.dataset.loaded = params.toString();
  }
  const again = () => { oldest = null; load().catch(ctx.showError); };
  userInput.addEventListener('change', again);
  actionSelect.addEventListener('change', again);
  sinceInput.addEventListener('change', again);
  refresh.addEventListener('click', again);
  more.addEventListener('click', () => load(true).catch(ctx.showError));
  load().catch(ctx.showError);
}

function notFoundView(main) {
  main.append(h('h2', { text: 'No such view' }), h('p', {}, h('a', { href: '#/agents', text: 'Back to the agents' })));
}

// ---- the router -----------------------------------------------------------------------------------------

const VIEWS = {
  agents: agentsView, run: runView, task: taskView, history: historyView, jobs: jobsView, job: jobView,
  schedules: schedulesView, schedule: scheduleView, audit: auditView,
};
let leaveView = null;

function route() {
  if (leaveView) leaveView();
  const hash = location.hash.replace(/^#\/?/, '') || 'agents';
  const [pathPart, queryPart = ''] = hash.split('?');
  const [name, ...args] = pathPart.split('/').map(decodeURIComponent);
  const navName = { task: 'history', job: 'jobs', schedule: 'schedules' }[name] || name;
  document.querySelectorAll('header nav a').forEach((a) => a.classList.toggle('active', a.dataset.view === navName));
  const main = $('#view');
  main.replaceChildren();
  main.dataset.view = name;
  delete main.dataset.done;
  const ctx = { alive: true, timers: new Set(), cleanups: [], showError: () => {} };
  leaveView = () => { ctx.alive = false; ctx.timers.forEach(clearTimeout); ctx.cleanups.forEach((f) => f()); };
  document.title = `mschedule: ${name}`;
  (VIEWS[name] || notFoundView)(main, args, new URLSearchParams(queryPart), ctx);
}

document.addEventListener('DOMContentLoaded', () => {
  $('#token-dialog').addEventListener('cancel', (event) => event.preventDefault());
  $('#forget-token').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    identity = null;
    showTokenButton();
    showIdentity();
    loadIdentity().finally(route);  // asks for a token, then shows whose it is
  });
  showTokenButton();
  saveSelection();
  window.addEventListener('hashchange', route);
  loadIdentity().finally(route);  // the role is known before a view draws its buttons
});
