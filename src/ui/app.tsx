/** @jsxImportSource hono/jsx/dom */
/**
 * The fngate dashboard, served at /ui/ on the Admin API port (src/core/admin/ui.ts). Hono's DOM JSX renders every
 * stored value as a text node or an attribute value, never as HTML (no dangerouslySetInnerHTML anywhere).
 * Everything it does is a call to the public Admin API (api.ts), plus "try it", which the browser sends to the
 * proxy itself, and the metrics view, which reads the prometheus export server (CORS for this origin only).
 */
import { render, useEffect, useRef, useState } from 'hono/jsx/dom';
import { type AnyJson, ApiError, admin, forgetKey, storedKey, storeKey } from './api.ts';
import { defaultMetricsUrl, METRICS_URL_ITEM, parseExposition, type RouteStats, routeStats } from './metrics.ts';
import { type Field, fieldValue, formFields, namedIn, type Schema, validate } from './schema.ts';

interface Kind {
  dir: string;
  label: string;
  /** The field that names an item in its path. */
  idField: 'id' | 'username' | 'name';
  post: boolean;
  /** Has `status` (enable/disable). */
  status: boolean;
  plugins: boolean;
  /** Admin API list filters offered. */
  search: ('name' | 'uri' | 'label')[];
}

const KINDS: Kind[] = [
  { dir: 'routes', label: 'Routes', idField: 'id', post: true, status: true, plugins: true, search: ['name', 'uri', 'label'] },
  { dir: 'upstreams', label: 'Upstreams', idField: 'id', post: true, status: false, plugins: false, search: ['name', 'label'] },
  { dir: 'services', label: 'Services', idField: 'id', post: true, status: false, plugins: true, search: ['name', 'label'] },
  { dir: 'consumers', label: 'Consumers', idField: 'username', post: false, status: false, plugins: true, search: ['label'] },
  { dir: 'consumer_groups', label: 'Consumer groups', idField: 'id', post: false, status: false, plugins: true, search: ['label'] },
  { dir: 'plugin_configs', label: 'Plugin configs', idField: 'id', post: false, status: false, plugins: true, search: ['name', 'label'] },
  { dir: 'global_rules', label: 'Global rules', idField: 'id', post: false, status: false, plugins: true, search: [] },
  { dir: 'plugin_metadata', label: 'Plugin metadata', idField: 'name', post: false, status: false, plugins: false, search: [] },
];
const CREDENTIALS: Kind = { dir: 'credentials', label: 'Credentials', idField: 'id', post: false, status: false, plugins: true, search: [] };

const PAGE_SIZE = 10;
const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'];
/** Fields the Admin API sets itself and refuses in a write. */
const SERVER_FIELDS = ['create_time', 'update_time'];
/** Route fields the one-screen route form edits (the rest are in the JSON editor). */
const ROUTE_FORM_FIELDS = ['name', 'uri', 'methods', 'hosts', 'status', 'plugins'];

type Obj = Record<string, AnyJson>;
const isObj = (x: unknown): x is Obj => typeof x === 'object' && x !== null && !Array.isArray(x);
const pretty = (x: unknown) => JSON.stringify(x, null, 2);
const message = (e: unknown) => (e instanceof Error ? e.message : String(e));
const inputText = (e: Event) => (e.target as HTMLInputElement).value;

/** Plugin names and schemas, loaded once after sign-in (`/plugins/list`, `/schema/plugins/<name>`). */
interface Catalog {
  names: string[];
  schemas: Map<string, Schema>;
  /** Plugins that send the request to a function: their schema has a `function_uri` (openfunction, ...). */
  serverless: string[];
}

async function loadCatalog(): Promise<Catalog> {
  const names: string[] = await admin('GET', '/plugins/list');
  const schemas = new Map<string, Schema>();
  await Promise.all(
    names.map(async (n) => {
      schemas.set(n, await admin('GET', `/schema/plugins/${encodeURIComponent(n)}`));
    }),
  );
  const serverless = names.filter((n) => isObj(schemas.get(n)?.properties) && 'function_uri' in (schemas.get(n)!.properties as Obj));
  return { names: [...names].sort(), schemas, serverless };
}

function App() {
  const [key, setKey] = useState<string | null>(storedKey());
  const [catalog, setCatalog] = useState<Catalog | null>(null);
  const [view, setView] = useState<{ kind: Kind; id?: string; parent?: string; editing: boolean; note?: string }>({ kind: KINDS[0]!, editing: false });
  /** Bumped by every click in the navigation, so that a list shown again is read again. */
  const [visit, setVisit] = useState(0);
  const [fatal, setFatal] = useState('');
  const [metrics, setMetrics] = useState(false);

  useEffect(() => {
    if (!key) return;
    loadCatalog().then(setCatalog, (e) => {
      if (e instanceof ApiError && e.status === 401) signOut();
      else setFatal(message(e));
    });
  }, [key]);

  function signOut() {
    forgetKey();
    setKey(null);
    setCatalog(null);
  }

  if (!key) return <SignIn onSignedIn={(k) => setKey(k)} />;
  return (
    <>
      <header>
        <h1>fngate</h1>
        <nav aria-label="Resources">
          {KINDS.map((k) => (
            <button
              type="button"
              key={k.dir}
              aria-current={!metrics && view.kind.dir === k.dir && !view.parent ? 'page' : undefined}
              onClick={() => {
                setVisit(visit + 1);
                setMetrics(false);
                setView({ kind: k, editing: false });
              }}
            >
              {k.label}
            </button>
          ))}
          <button type="button" aria-current={metrics ? 'page' : undefined} onClick={() => setMetrics(true)}>
            Metrics
          </button>
        </nav>
        <button type="button" onClick={signOut}>
          Sign out
        </button>
      </header>
      <main>
        {fatal && (
          <p class="error" role="alert">
            {fatal}
          </p>
        )}
        {metrics ? (
          <Metrics />
        ) : !catalog ? (
          <p>Loading…</p>
        ) : view.editing ? (
          <Editor
            key={`${view.kind.dir}:${view.parent ?? ''}:${view.id ?? ''}:${visit}`}
            kind={view.kind}
            id={view.id}
            parent={view.parent}
            note={view.note}
            catalog={catalog}
            onDone={() => setView(view.parent ? { kind: KINDS[3]!, id: view.parent, editing: true } : { kind: view.kind, editing: false })}
            onOpen={(kind, id, parent, note) => setView({ kind, id, parent, editing: true, note })}
          />
        ) : (
          <List key={`${view.kind.dir}:${visit}`} kind={view.kind} onOpen={(id) => setView({ kind: view.kind, id, editing: true })} />
        )}
      </main>
    </>
  );
}

function SignIn(props: { onSignedIn: (key: string) => void }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  async function submit(e: Event) {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      await admin('GET', `/routes?page=1&page_size=${PAGE_SIZE}`, undefined, value);
      storeKey(value);
      props.onSignedIn(value);
    } catch (err) {
      setError(message(err));
    } finally {
      setBusy(false);
    }
  }
  return (
    <main class="signin">
      <h1>fngate dashboard</h1>
      <form onSubmit={submit}>
        <label for="admin-key">Admin key</label>
        <input id="admin-key" type="password" autocomplete="off" value={value} onInput={(e: Event) => setValue(inputText(e))} required />
        <p class="muted">Kept in this tab's session storage and sent as X-API-KEY; no cookie.</p>
        <button class="primary" type="submit" disabled={busy}>
          Sign in
        </button>
        {error && (
          <p class="error" role="alert" id="signin-error">
            {error}
          </p>
        )}
      </form>
    </main>
  );
}

/** The list of one kind, with the Admin API's own filters and paging. */
function List(props: { kind: Kind; onOpen: (id?: string) => void }) {
  const { kind } = props;
  const [filters, setFilters] = useState<Record<string, string>>({});
  const [page, setPage] = useState(1);
  const [data, setData] = useState<{ total: number; list: Obj[] } | null>(null);
  const [error, setError] = useState('');
  const [note, setNote] = useState('');
  const [confirming, setConfirming] = useState<string | null>(null);
  const [tick, setTick] = useState(0);

  // Reloads on kind, page, or after a change or a search (tick). An answer that comes after the list was left (another
  // kind clicked meanwhile) is dropped, not set on the replaced list (before, the 360 px e2e case now and then saw two
  // lists, two "New" buttons, at once; not seen in 5 runs since).
  useEffect(() => {
    let gone = false;
    setError('');
    const q = new URLSearchParams({ page: String(page), page_size: String(PAGE_SIZE) });
    for (const [k, v] of Object.entries(filters)) if (v !== '') q.set(k, v);
    admin('GET', `/${kind.dir}?${q}`).then(
      (d) => gone || setData({ total: d.total ?? 0, list: Array.isArray(d.list) ? d.list : [] }),
      (e) => gone || setError(message(e)),
    );
    return () => {
      gone = true;
    };
  }, [kind.dir, page, tick]);
  useEffect(() => {
    setFilters({});
    setPage(1);
    setConfirming(null);
    setNote('');
  }, [kind.dir]);

  const idOf = (item: Obj): string => String(item.value?.[kind.idField] ?? String(item.key).split('/').pop());
  async function act(fn: () => Promise<unknown>, done: string) {
    setError('');
    try {
      await fn();
      setNote(done);
      setTick(tick + 1);
    } catch (e) {
      setError(message(e));
    }
  }
  const pages = data ? Math.max(1, Math.ceil(data.total / PAGE_SIZE)) : 1;
  return (
    <section aria-labelledby="list-title">
      <div class="row">
        <h2 id="list-title">{kind.label}</h2>
        <button type="button" class="primary" onClick={() => props.onOpen(undefined)}>
          New
        </button>
      </div>
      {kind.search.length > 0 && (
        <form
          class="row"
          aria-label={`Search ${kind.label.toLowerCase()}`}
          onSubmit={(e: Event) => {
            e.preventDefault();
            setPage(1);
            setTick(tick + 1);
          }}
        >
          {kind.search.map((f) => (
            <div class="field" key={f}>
              <label for={`search-${f}`}>{f === 'label' ? 'Label (key)' : f === 'uri' ? 'URI contains' : 'Name contains'}</label>
              <input id={`search-${f}`} value={filters[f] ?? ''} onInput={(e: Event) => setFilters({ ...filters, [f]: inputText(e) })} />
            </div>
          ))}
          <button type="submit">Search</button>
        </form>
      )}
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {note && (
        <p class="ok" role="status">
          {note}
        </p>
      )}
      {data && (
        <>
          <div class="table-wrap">
            <table>
              <thead>
                <tr>
                  <th>{kind.idField}</th>
                  <th>{kind.dir === 'routes' ? 'Name / URI' : 'Name / description'}</th>
                  <th class="opt">Plugins</th>
                  {kind.status && <th>Status</th>}
                  <th>Actions</th>
                </tr>
              </thead>
              <tbody>
                {data.list.map((item) => {
                  const v: Obj = isObj(item.value) ? item.value : {};
                  const id = idOf(item);
                  const enabled = v.status !== 0;
                  return (
                    <tr key={id} data-id={id}>
                      <td>{id}</td>
                      <td>
                        <div class="item-name">{String(v.name ?? v.desc ?? '')}</div>
                        {kind.dir === 'routes' && <div class="muted">{String(v.uri ?? (Array.isArray(v.uris) ? v.uris.join(' ') : ''))}</div>}
                      </td>
                      <td class="opt">{isObj(v.plugins) ? Object.keys(v.plugins).join(', ') : ''}</td>
                      {kind.status && <td>{enabled ? 'enabled' : 'disabled'}</td>}
                      <td class="actions">
                        <button type="button" aria-label={`Edit ${id}`} onClick={() => props.onOpen(id)}>
                          Edit
                        </button>
                        {kind.status && (
                          <button
                            type="button"
                            aria-label={`${enabled ? 'Disable' : 'Enable'} ${id}`}
                            onClick={() =>
                              act(
                                () => admin('PATCH', `/${kind.dir}/${encodeURIComponent(id)}`, { status: enabled ? 0 : 1 }),
                                `${id} ${enabled ? 'disabled' : 'enabled'}`,
                              )
                            }
                          >
                            {enabled ? 'Disable' : 'Enable'}
                          </button>
                        )}
                        {confirming === id ? (
                          <button
                            type="button"
                            class="danger"
                            aria-label={`Really delete ${id}`}
                            onClick={() => {
                              setConfirming(null);
                              act(() => admin('DELETE', `/${kind.dir}/${encodeURIComponent(id)}`), `${id} deleted`);
                            }}
                          >
                            Really delete?
                          </button>
                        ) : (
                          <button type="button" class="danger" aria-label={`Delete ${id}`} onClick={() => setConfirming(id)}>
                            Delete
                          </button>
                        )}
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
          <div class="row">
            <button type="button" disabled={page <= 1} onClick={() => setPage(page - 1)}>
              Previous
            </button>
            <span>
              Page {page} of {pages} ({data.total} in all)
            </span>
            <button type="button" disabled={page >= pages} onClick={() => setPage(page + 1)}>
              Next
            </button>
          </div>
        </>
      )}
    </section>
  );
}

/** Where an Admin API 400 points: shown next to that plugin's field, or that top-level field. */
interface ServerError {
  text: string;
  plugin?: string;
  field?: string;
}

function Editor(props: {
  kind: Kind;
  id: string | undefined;
  parent: string | undefined;
  /** Shown when the editor opens (the "Saved" of a new item, which then opens under its id). */
  note: string | undefined;
  catalog: Catalog;
  onDone: () => void;
  onOpen: (kind: Kind, id?: string, parent?: string, note?: string) => void;
}) {
  const { kind, catalog } = props;
  const base = props.parent ? `/consumers/${encodeURIComponent(props.parent)}/credentials` : `/${kind.dir}`;
  const [draft, setDraft] = useState<Obj | null>(props.id === undefined ? (kind.dir === 'routes' ? { uri: '/', plugins: {} } : {}) : null);
  const [newId, setNewId] = useState('');
  const [serverError, setServerError] = useState<ServerError | null>(null);
  const [saved, setSaved] = useState(props.note ?? '');
  const [loadError, setLoadError] = useState('');
  /** plugin_metadata: the plugin's metadata schema, for the live errors (none when the plugin has no such schema). */
  const [metaSchema, setMetaSchema] = useState<Schema | undefined>(undefined);
  const metaOf = kind.dir === 'plugin_metadata' ? (props.id ?? newId) : '';
  useEffect(() => {
    setMetaSchema(undefined);
    if (!metaOf) return;
    admin('GET', `/schema/plugins/${encodeURIComponent(metaOf)}?schema_type=metadata`).then(setMetaSchema, () => {});
  }, [metaOf]);

  useEffect(() => {
    if (props.id === undefined) return;
    admin('GET', `${base}/${encodeURIComponent(props.id)}`).then(
      (d) => {
        const v: Obj = { ...(isObj(d.value) ? d.value : {}) };
        for (const f of SERVER_FIELDS) delete v[f];
        setDraft(v);
      },
      (e) => setLoadError(message(e)),
    );
  }, [props.id, base]);

  if (loadError)
    return (
      <p class="error" role="alert">
        {loadError}
      </p>
    );
  if (!draft) return <p>Loading…</p>;

  const id = props.id ?? (newId.trim() || undefined);
  const needsId = props.id === undefined && !kind.post;
  async function save() {
    setServerError(null);
    setSaved('');
    const body: Obj = { ...draft };
    for (const f of SERVER_FIELDS) delete body[f];
    try {
      let res: AnyJson;
      if (kind.dir === 'consumers') res = await admin('PUT', '/consumers', body);
      else if (kind.dir === 'plugin_metadata') res = await admin('PUT', `/plugin_metadata/${encodeURIComponent(id ?? '')}`, body);
      else if (id === undefined) res = await admin('POST', base, body);
      else res = await admin('PUT', `${base}/${encodeURIComponent(id)}`, body);
      const key = String(res?.key ?? '');
      if (props.id === undefined) props.onOpen(kind, key.split('/').pop() || id, props.parent, `Saved ${key}`);
      else setSaved(`Saved ${key}`);
    } catch (e) {
      const text = message(e);
      setServerError({ text, ...namedIn(text) });
    }
  }

  const title = props.id === undefined ? `New ${kind.label.toLowerCase().replace(/s$/, '')}` : `${kind.label}: ${props.id}`;
  const rest: Obj = { ...draft };
  if (kind.plugins) delete rest.plugins;
  if (kind.dir === 'routes') for (const f of ROUTE_FORM_FIELDS) delete rest[f];
  // The id of a stored item is its path: shown in the title, not editable here.
  if (props.id !== undefined) delete rest[kind.idField];
  const fieldError = (f: string) => (serverError && !serverError.plugin && serverError.field === f ? serverError.text : undefined);

  return (
    <section aria-labelledby="editor-title">
      <h2 id="editor-title">
        {props.parent ? `Consumer ${props.parent}: ` : ''}
        {title}
      </h2>
      {serverError && (
        <p class="error" role="alert" id="save-error">
          {serverError.text}
        </p>
      )}
      {saved && (
        <p class="ok" role="status">
          {saved}
        </p>
      )}
      {needsId && kind.dir !== 'consumers' && (
        <div class="field">
          <label for="new-id">{kind.dir === 'plugin_metadata' ? 'Plugin' : 'ID'}</label>
          {kind.dir === 'plugin_metadata' ? (
            <select id="new-id" value={newId} onChange={(e: Event) => setNewId(inputText(e))}>
              <option value="">choose a plugin</option>
              {catalog.names.map((n) => (
                <option value={n} key={n}>
                  {n}
                </option>
              ))}
            </select>
          ) : (
            <input id="new-id" value={newId} onInput={(e: Event) => setNewId(inputText(e))} />
          )}
        </div>
      )}
      {kind.dir === 'routes' && <RouteForm draft={draft} catalog={catalog} onChange={setDraft} fieldError={fieldError} />}
      {kind.plugins && (
        <Plugins
          plugins={isObj(draft.plugins) ? draft.plugins : {}}
          catalog={catalog}
          consumer={kind.dir === 'consumers' || kind.dir === 'credentials'}
          serverError={serverError}
          onChange={(plugins) => setDraft({ ...draft, plugins })}
        />
      )}
      <h3>{kind.dir === 'routes' ? 'Other route fields' : 'Fields'}</h3>
      <JsonEditor
        id="rest-json"
        label={kind.dir === 'routes' ? 'Other route fields (JSON)' : `${kind.label} fields (JSON)`}
        value={rest}
        onChange={(v) => {
          if (!isObj(v)) return;
          const keep: Obj = {};
          if (kind.plugins && draft.plugins !== undefined) keep.plugins = draft.plugins;
          if (kind.dir === 'routes') for (const f of ROUTE_FORM_FIELDS) if (draft[f] !== undefined) keep[f] = draft[f];
          if (props.id !== undefined && draft[kind.idField] !== undefined) keep[kind.idField] = draft[kind.idField];
          setDraft({ ...v, ...keep });
        }}
        schema={metaSchema}
        serverText={serverError && !serverError.plugin && serverError.field && !ROUTE_FORM_FIELDS.includes(serverError.field) ? serverError.text : undefined}
      />
      <div class="row">
        <button type="button" class="primary" onClick={save}>
          Save
        </button>
        <button type="button" onClick={props.onDone}>
          Back
        </button>
      </div>
      {kind.dir === 'consumers' && props.id !== undefined && <Credentials username={props.id} onOpen={(cid) => props.onOpen(CREDENTIALS, cid, props.id)} />}
      {kind.dir === 'routes' && props.id !== undefined && <TryIt route={draft} />}
    </section>
  );
}

function RouteForm(props: { draft: Obj; catalog: Catalog; onChange: (d: Obj) => void; fieldError: (f: string) => string | undefined }) {
  const { draft, catalog } = props;
  const plugins: Obj = isObj(draft.plugins) ? draft.plugins : {};
  const fnPlugin = catalog.serverless.find((n) => plugins[n] !== undefined) ?? '';
  const fnConf: Obj = fnPlugin && isObj(plugins[fnPlugin]) ? plugins[fnPlugin] : {};
  const methods: string[] = Array.isArray(draft.methods) ? draft.methods : [];
  const set = (field: string, value: unknown) => {
    const next = { ...draft };
    if (value === undefined) delete next[field];
    else next[field] = value;
    props.onChange(next);
  };
  const setPlugins = (p: Obj) => set('plugins', p);
  const fnSchema = fnPlugin ? catalog.schemas.get(fnPlugin) : undefined;
  const hasToken = isObj(fnSchema?.properties) && 'authorization' in (fnSchema.properties as Obj);
  const origin = location.origin;
  const cors: Obj | undefined = isObj(plugins.cors) ? plugins.cors : undefined;
  const tryItAllowed = cors !== undefined && String(cors.allow_origins ?? '*').split(',').some((o) => o === '*' || o === origin);
  const err = (f: string) => {
    const text = props.fieldError(f);
    return (
      text && (
        <p class="error" id={`err-${f}`}>
          {text}
        </p>
      )
    );
  };
  return (
    <fieldset class="panel">
      <legend>Route</legend>
      <div class="row">
        <div class="field">
          <label for="route-name">Name</label>
          <input id="route-name" value={String(draft.name ?? '')} onInput={(e: Event) => set('name', inputText(e) || undefined)} />
          {err('name')}
        </div>
        <div class="field">
          <label for="route-uri">Path</label>
          <input id="route-uri" value={String(draft.uri ?? '')} placeholder="/hello/*" onInput={(e: Event) => set('uri', inputText(e))} />
          {err('uri')}
        </div>
      </div>
      <fieldset>
        <legend>Methods (none: all)</legend>
        {METHODS.map((m) => (
          <label class="inline" key={m}>
            <input
              type="checkbox"
              checked={methods.includes(m)}
              onChange={(e: Event) => {
                const on = (e.target as HTMLInputElement).checked;
                const next = on ? [...methods, m] : methods.filter((x) => x !== m);
                set('methods', next.length ? next : undefined);
              }}
            />
            {m}
          </label>
        ))}
        {err('methods')}
      </fieldset>
      <div class="row">
        <div class="field">
          <label for="route-hosts">Hosts (comma-separated; empty: any)</label>
          <input
            id="route-hosts"
            value={Array.isArray(draft.hosts) ? draft.hosts.join(', ') : ''}
            onInput={(e: Event) => {
              const hosts = inputText(e)
                .split(',')
                .map((h) => h.trim())
                .filter(Boolean);
              set('hosts', hosts.length ? hosts : undefined);
            }}
          />
          {err('hosts')}
        </div>
        <div>
          <label class="inline">
            <input type="checkbox" checked={draft.status !== 0} onChange={(e: Event) => set('status', (e.target as HTMLInputElement).checked ? 1 : 0)} />
            Enabled
          </label>
        </div>
      </div>
      <div class="row">
        <div class="field">
          <label for="route-fn-plugin">Send to function</label>
          <select
            id="route-fn-plugin"
            value={fnPlugin}
            onChange={(e: Event) => {
              const chosen = inputText(e);
              const next: Obj = { ...plugins };
              if (fnPlugin) delete next[fnPlugin];
              if (chosen) next[chosen] = { ...fnConf };
              setPlugins(next);
            }}
          >
            <option value="">no function (other upstream)</option>
            {catalog.serverless.map((n) => (
              <option value={n} key={n}>
                {n}
              </option>
            ))}
          </select>
        </div>
        {fnPlugin && (
          <div class="field">
            <label for="route-fn-url">Function URL</label>
            <input
              id="route-fn-url"
              type="url"
              value={String(fnConf.function_uri ?? '')}
              placeholder="http://fn.example.com/default/hello"
              onInput={(e: Event) => setPlugins({ ...plugins, [fnPlugin]: { ...fnConf, function_uri: inputText(e) } })}
            />
          </div>
        )}
        {fnPlugin && hasToken && (
          <div class="field">
            <label for="route-fn-token">Function token (optional)</label>
            <input
              id="route-fn-token"
              type="password"
              autocomplete="off"
              value={String(isObj(fnConf.authorization) ? (fnConf.authorization.service_token ?? '') : '')}
              onInput={(e: Event) => {
                const token = inputText(e);
                const next: Obj = { ...fnConf };
                if (token) next.authorization = { ...(isObj(fnConf.authorization) ? fnConf.authorization : {}), service_token: token };
                else delete next.authorization;
                setPlugins({ ...plugins, [fnPlugin]: next });
              }}
            />
          </div>
        )}
      </div>
      <label class="inline">
        <input
          id="route-try-cors"
          type="checkbox"
          checked={tryItAllowed}
          onChange={(e: Event) => {
            const next: Obj = { ...plugins };
            if ((e.target as HTMLInputElement).checked) next.cors = { ...(cors ?? {}), allow_origins: origin, expose_headers: '*' };
            else delete next.cors;
            setPlugins(next);
          }}
        />
        Allow "try it" from this dashboard (adds the cors plugin for {origin})
      </label>
    </fieldset>
  );
}

/**
 * The plugins of a resource. In a consumer or a credential a plugin's conf is checked against its consumer schema
 * when it has one (`?schema_type=consumer`, e.g. key-auth's `key`), as APISIX does; fetched when first needed.
 */
function Plugins(props: { plugins: Obj; catalog: Catalog; consumer: boolean; serverError: ServerError | null; onChange: (p: Obj) => void }) {
  const { plugins, catalog } = props;
  const [adding, setAdding] = useState('');
  const [consumerSchemas, setConsumerSchemas] = useState<Record<string, Schema | null>>({});
  const names = Object.keys(plugins);
  const wanted = props.consumer ? names.filter((n) => catalog.schemas.has(n) && !(n in consumerSchemas)) : [];
  useEffect(() => {
    if (!wanted.length) return;
    Promise.all(
      wanted.map((n) =>
        admin('GET', `/schema/plugins/${encodeURIComponent(n)}?schema_type=consumer`).then(
          (s: Schema) => [n, s] as const,
          () => [n, null] as const,
        ),
      ),
    ).then((got) => setConsumerSchemas((old) => ({ ...old, ...Object.fromEntries(got) })));
  }, [wanted.join(',')]);
  const schemaOf = (n: string) => (props.consumer && consumerSchemas[n]) || catalog.schemas.get(n);
  return (
    <div>
      <h3>Plugins</h3>
      {names.length === 0 && <p class="muted">No plugins.</p>}
      {names.map((name) => (
        <PluginEditor
          key={name}
          name={name}
          conf={plugins[name]}
          schema={schemaOf(name)}
          known={catalog.schemas.has(name)}
          serverError={props.serverError?.plugin === name ? props.serverError : undefined}
          onChange={(conf) => props.onChange({ ...plugins, [name]: conf })}
          onRemove={() => {
            const next = { ...plugins };
            delete next[name];
            props.onChange(next);
          }}
        />
      ))}
      <div class="row">
        <div class="field">
          <label for="add-plugin">Add a plugin</label>
          <select id="add-plugin" value={adding} onChange={(e: Event) => setAdding(inputText(e))}>
            <option value="">choose…</option>
            {catalog.names
              .filter((n) => !(n in plugins))
              .map((n) => (
                <option value={n} key={n}>
                  {n}
                </option>
              ))}
          </select>
        </div>
        <button
          type="button"
          disabled={!adding}
          onClick={() => {
            props.onChange({ ...plugins, [adding]: {} });
            setAdding('');
          }}
        >
          Add
        </button>
      </div>
    </div>
  );
}

function PluginEditor(props: {
  name: string;
  conf: AnyJson;
  schema: Schema | undefined;
  known: boolean;
  serverError: ServerError | undefined;
  onChange: (conf: AnyJson) => void;
  onRemove: () => void;
}) {
  const { name, conf, schema, serverError } = props;
  const fields = schema ? formFields(schema) : undefined;
  const c: Obj = isObj(conf) ? conf : {};
  const domId = `plugin-${name.replace(/[^A-Za-z0-9_-]/g, '_')}`;
  const namedField = serverError?.field && fields?.some((f) => f.name === serverError.field) ? serverError.field : undefined;
  return (
    <fieldset class="panel" data-plugin={name}>
      <legend>{name}</legend>
      <div class="row">
        <button type="button" class="danger" aria-label={`Remove plugin ${name}`} onClick={props.onRemove}>
          Remove
        </button>
      </div>
      {!props.known && <p class="muted">This gateway does not know this plugin: it is kept as stored; edit it as JSON.</p>}
      {serverError && !namedField && (
        <p class="error plugin-error" role="alert">
          {serverError.text}
        </p>
      )}
      {fields && fields.length > 0 && (
        <div class="row">
          {fields.map((f) => (
            <FieldInput
              key={f.name}
              id={`${domId}-${f.name}`}
              field={f}
              value={c[f.name]}
              error={namedField === f.name ? serverError?.text : undefined}
              onChange={(v) => {
                const next = { ...c };
                if (v === undefined) delete next[f.name];
                else next[f.name] = v;
                props.onChange(next);
              }}
            />
          ))}
        </div>
      )}
      <JsonEditor id={`${domId}-json`} label={`${name} configuration (JSON)`} value={conf} schema={schema} onChange={props.onChange} />
    </fieldset>
  );
}

function FieldInput(props: { id: string; field: Field; value: unknown; error: string | undefined; onChange: (v: unknown) => void }) {
  const { field, id } = props;
  const label = `${field.name}${field.required ? ' (required)' : ''}`;
  const errorEl = props.error && (
    <p class="error field-error" id={`${id}-error`}>
      {props.error}
    </p>
  );
  if (field.kind === 'boolean') {
    return (
      <div>
        <label class="inline">
          <input id={id} type="checkbox" checked={(props.value ?? field.default) === true} onChange={(e: Event) => props.onChange((e.target as HTMLInputElement).checked)} />
          {label}
        </label>
        {errorEl}
      </div>
    );
  }
  const shown = props.value === undefined ? '' : String(props.value);
  const change = (raw: string) => props.onChange(raw === '' ? undefined : fieldValue(field, raw));
  return (
    <div class="field">
      <label for={id}>{label}</label>
      {field.kind === 'enum' ? (
        <select id={id} value={shown} onChange={(e: Event) => change(inputText(e))}>
          <option value="">{field.default === undefined ? '(unset)' : `(default: ${String(field.default)})`}</option>
          {field.options!.map((o) => (
            <option value={String(o)} key={String(o)}>
              {String(o)}
            </option>
          ))}
        </select>
      ) : (
        <input
          id={id}
          inputmode={field.kind === 'string' ? undefined : 'decimal'}
          value={shown}
          placeholder={field.default === undefined ? '' : `default: ${String(field.default)}`}
          aria-invalid={props.error ? 'true' : undefined}
          aria-describedby={props.error ? `${id}-error` : undefined}
          onInput={(e: Event) => change(inputText(e))}
        />
      )}
      {field.description && <p class="muted">{field.description}</p>}
      {errorEl}
    </div>
  );
}

/** A JSON textarea: its own text while being typed, the parsed value handed up, live schema errors under it. */
function JsonEditor(props: {
  id: string;
  label: string;
  value: unknown;
  schema?: Schema | undefined;
  serverText?: string | undefined;
  onChange: (v: AnyJson) => void;
}) {
  const [text, setText] = useState(pretty(props.value ?? {}));
  const [parseError, setParseError] = useState('');
  const last = useRef<string>(JSON.stringify(props.value ?? {}));
  const incoming = JSON.stringify(props.value ?? {});
  useEffect(() => {
    if (incoming !== last.current) {
      last.current = incoming;
      setText(pretty(props.value ?? {}));
      setParseError('');
    }
  }, [incoming]);
  const errors = props.schema && !parseError ? validate(props.schema, props.value ?? {}) : [];
  return (
    <div class="field">
      <label for={props.id}>{props.label}</label>
      <textarea
        id={props.id}
        spellcheck={false}
        rows={Math.min(16, Math.max(4, text.split('\n').length + 1))}
        value={text}
        aria-invalid={parseError || errors.length ? 'true' : undefined}
        onInput={(e: Event) => {
          const t = (e.target as HTMLTextAreaElement).value;
          setText(t);
          try {
            const v = JSON.parse(t);
            setParseError('');
            last.current = JSON.stringify(v);
            props.onChange(v);
          } catch (err) {
            setParseError(message(err));
          }
        }}
      />
      {parseError && <p class="error">JSON: {parseError}</p>}
      {errors.length > 0 && (
        <ul class="error live-errors" aria-label="Schema errors">
          {errors.map((e) => (
            <li key={`${e.path}:${e.message}`}>
              {e.path || '(value)'} {e.message}
            </li>
          ))}
        </ul>
      )}
      {props.serverText && <p class="error">{props.serverText}</p>}
    </div>
  );
}

function Credentials(props: { username: string; onOpen: (id?: string) => void }) {
  const [list, setList] = useState<Obj[]>([]);
  const [error, setError] = useState('');
  const [tick, setTick] = useState(0);
  const path = `/consumers/${encodeURIComponent(props.username)}/credentials`;
  // Reloads after a delete (tick).
  useEffect(() => {
    admin('GET', path).then(
      (d) => setList(Array.isArray(d.list) ? d.list : []),
      (e) => setError(message(e)),
    );
  }, [path, tick]);
  return (
    <section aria-labelledby="cred-title">
      <div class="row">
        <h3 id="cred-title">Credentials</h3>
        <button type="button" onClick={() => props.onOpen(undefined)}>
          New credential
        </button>
      </div>
      {error && <p class="error">{error}</p>}
      <ul>
        {list.map((c) => {
          const id = String(c.key).split('/').pop()!;
          return (
            <li key={id}>
              {id} <span class="muted">{isObj(c.value?.plugins) ? Object.keys(c.value.plugins).join(', ') : ''}</span>{' '}
              <button type="button" aria-label={`Edit credential ${id}`} onClick={() => props.onOpen(id)}>
                Edit
              </button>{' '}
              <button
                type="button"
                class="danger"
                aria-label={`Delete credential ${id}`}
                onClick={() =>
                  admin('DELETE', `${path}/${encodeURIComponent(id)}`).then(
                    () => setTick(tick + 1),
                    (e) => setError(message(e)),
                  )
                }
              >
                Delete
              </button>
            </li>
          );
        })}
      </ul>
    </section>
  );
}

const PROXY_ITEM = 'fngate.proxyUrl';
/** The proxy's usual address seen from this page: port 9080 next to the Admin API's 9180, else this origin (Workers). */
const defaultProxy = () =>
  sessionStorage.getItem(PROXY_ITEM) ?? (location.port === '9180' ? `${location.protocol}//${location.hostname}:9080` : location.origin);

/**
 * "Try it": the browser itself sends the request to the proxy. On another origin (Node, Deno, Bun: port 9080 vs
 * 9180) the browser lets the page read the answer only when the route answers with CORS headers for this origin;
 * the dashboard has no endpoint of its own to relay it.
 */
function TryIt(props: { route: Obj }) {
  const uri = String(props.route.uri ?? (Array.isArray(props.route.uris) ? props.route.uris[0] : '/')).replace(/\*$/, '');
  const methods: string[] = Array.isArray(props.route.methods) ? props.route.methods : [];
  const [proxy, setProxy] = useState(defaultProxy());
  const [path, setPath] = useState(uri);
  const [method, setMethod] = useState(methods[0] ?? 'GET');
  const [body, setBody] = useState('');
  const [result, setResult] = useState<{ status: number; ms: number; headers: [string, string][]; body: string } | null>(null);
  const [error, setError] = useState('');
  async function send(e: Event) {
    e.preventDefault();
    setError('');
    setResult(null);
    sessionStorage.setItem(PROXY_ITEM, proxy);
    const url = proxy.replace(/\/+$/, '') + path;
    const t0 = performance.now();
    try {
      const res = await fetch(url, {
        method,
        body: method === 'GET' || method === 'HEAD' || body === '' ? undefined : body,
        mode: 'cors',
        credentials: 'omit',
        cache: 'no-store',
      });
      const text = await res.text();
      setResult({ status: res.status, ms: Math.round(performance.now() - t0), headers: [...res.headers], body: text });
    } catch (err) {
      setError(
        `The browser could not read an answer from ${url} (${message(err)}). Either the proxy is not reachable from ` +
          `this browser at that address, or the route does not allow this page's origin (${location.origin}) with ` +
          'CORS: tick "Allow try it from this dashboard" on the route and save it.',
      );
    }
  }
  return (
    <section class="panel" aria-labelledby="try-title">
      <h3 id="try-title">Try it through the proxy</h3>
      <form onSubmit={send}>
        <div class="row">
          <div class="field">
            <label for="try-proxy">Proxy URL</label>
            <input id="try-proxy" value={proxy} onInput={(e: Event) => setProxy(inputText(e))} />
          </div>
          <div class="field">
            <label for="try-method">Method</label>
            <select id="try-method" value={method} onChange={(e: Event) => setMethod(inputText(e))}>
              {METHODS.map((m) => (
                <option value={m} key={m}>
                  {m}
                </option>
              ))}
            </select>
          </div>
          <div class="field">
            <label for="try-path">Path and query</label>
            <input id="try-path" value={path} onInput={(e: Event) => setPath(inputText(e))} />
          </div>
        </div>
        <label for="try-body">Body</label>
        <textarea id="try-body" rows={3} value={body} onInput={(e: Event) => setBody((e.target as HTMLTextAreaElement).value)} />
        <button type="submit" class="primary">
          Send
        </button>
      </form>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {result && (
        <div id="try-result" role="status">
          <p>
            <strong id="try-status">{result.status}</strong> in {result.ms} ms
          </p>
          <pre id="try-headers">{result.headers.map(([k, v]) => `${k}: ${v}`).join('\n')}</pre>
          <pre id="try-body-out">{result.body}</pre>
        </div>
      )}
    </section>
  );
}

const storedMetricsUrl = () => localStorage.getItem(METRICS_URL_ITEM) ?? defaultMetricsUrl(location);
const ms = (x: number | undefined) => (x === undefined ? '–' : x < 10 ? x.toFixed(1) : String(Math.round(x)));

/**
 * Per-route requests, errors and latency, read by the browser from the prometheus export server (PROMETHEUS_PORT,
 * another origin, which answers CORS for the Admin API's origin only). Counted where the `prometheus` plugin runs
 * (route, service or global rule); Workers have no export server.
 */
function Metrics() {
  const [url, setUrl] = useState(storedMetricsUrl());
  const [rows, setRows] = useState<RouteStats[] | null>(null);
  const [at, setAt] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  async function load() {
    setBusy(true);
    setError('');
    try {
      // Bounded: an address that swallows packets would otherwise leave the view waiting for minutes.
      const res = await fetch(url, { mode: 'cors', credentials: 'omit', cache: 'no-store', signal: AbortSignal.timeout(10_000) });
      if (!res.ok) throw new Error(`HTTP ${res.status} from ${url}`);
      setRows(routeStats(parseExposition(await res.text())));
      setAt(new Date().toLocaleTimeString());
    } catch (e) {
      setRows(null);
      setError(
        e instanceof DOMException && e.name === 'TimeoutError'
          ? `no answer from ${url} within 10 s`
          : e instanceof TypeError
          ? `${url} could not be read (${message(e)}): the export server is not reachable from this browser at that ` +
              `address (PROMETHEUS_PORT off, another port or host, or Workers, which have none), or it does not ` +
              `answer CORS for this page's origin (${location.origin}), which it does only for the Admin API's own`
          : message(e),
      );
    } finally {
      setBusy(false);
    }
  }
  useEffect(() => {
    load();
  }, []);
  return (
    <section aria-labelledby="metrics-title">
      <h2 id="metrics-title">Metrics per route</h2>
      <form
        class="row"
        onSubmit={(e: Event) => {
          e.preventDefault();
          localStorage.setItem(METRICS_URL_ITEM, url);
          load();
        }}
      >
        <div class="field">
          <label for="metrics-url">Metrics URL</label>
          <input id="metrics-url" value={url} onInput={(e: Event) => setUrl(inputText(e))} />
        </div>
        <button type="submit" class="primary" disabled={busy}>
          Refresh
        </button>
      </form>
      <p class="muted">
        Counted by the prometheus plugin (on a route, a service or a global rule) since the gateway started; latency
        percentiles are estimated from the request latency histogram's buckets. The export server renders at most every
        PROMETHEUS_REFRESH_INTERVAL seconds.
      </p>
      {error && (
        <p class="error" role="alert" id="metrics-error">
          metrics unavailable ({error})
        </p>
      )}
      {rows && (
        <div class="table-wrap" role="status">
          <p class="muted">
            {rows.length === 0 ? 'No requests counted yet.' : `${rows.length} route(s)`}, read at {at}
          </p>
          {rows.length > 0 && (
            <table id="metrics-table">
              <thead>
                <tr>
                  <th>Route</th>
                  <th>Requests</th>
                  <th class="opt">4xx</th>
                  <th class="opt">5xx</th>
                  <th>Errors</th>
                  <th>p50 ms</th>
                  <th>p95 ms</th>
                </tr>
              </thead>
              <tbody>
                {rows.map((r) => (
                  <tr key={r.route} data-route={r.route}>
                    <td>{r.route === '' ? <span class="muted">(no route)</span> : r.route}</td>
                    <td class="requests">{r.requests}</td>
                    <td class="opt">{r.status4xx}</td>
                    <td class="opt">{r.status5xx}</td>
                    <td>{`${(r.errorRate * 100).toFixed(1)} %`}</td>
                    <td>{ms(r.p50)}</td>
                    <td>{ms(r.p95)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
      )}
    </section>
  );
}

render(<App />, document.getElementById('app')!);
