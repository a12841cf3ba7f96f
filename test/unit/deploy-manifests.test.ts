// The Dockerfile and the Kubernetes manifests under deploy/ (issue 19 item 5) use the ports, paths and environment
// variables the gateway reads: checked against src/runtime/settings.ts and the status API itself (Docker and a
// cluster are not available here). Run: node --import tsx --test test/unit/deploy-manifests.test.ts
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { readSettings, SETTINGS_DOC } from '../../src/runtime/settings.ts';
import { statusHandler } from '../../src/runtime/status.ts';
import { loadYamlParser, parseStandalone } from '../../src/store/standalone.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const KNOWN = new Set(SETTINGS_DOC.flatMap((s) => s.name.split(' / ')));
const MANIFESTS = readdirSync(join(ROOT, 'deploy/kubernetes')).filter((f) => f.endsWith('.yaml'));

// biome-ignore lint/suspicious/noExplicitAny: Kubernetes objects are checked field by field below
type K8s = any;

function objects(file: string): K8s[] {
  const docs = parseAllDocuments(readFileSync(join(ROOT, 'deploy/kubernetes', file), 'utf8'));
  for (const d of docs) assert.deepEqual(d.errors, [], `${file}: YAML errors`);
  return docs.map((d) => d.toJS()).filter(Boolean);
}

/** The container's environment as the gateway would see it (secret references become a placeholder value). */
function containerEnv(c: K8s, objs: K8s[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = String(e.value);
    else {
      const ref = e.valueFrom?.secretKeyRef;
      assert.ok(ref, `${e.name}: a value or a secretKeyRef`);
      const secret = objs.find((o) => o.kind === 'Secret' && o.metadata.name === ref.name);
      assert.ok(secret, `${e.name}: Secret ${ref.name} is in the same file`);
      assert.ok(ref.key in secret.stringData, `${e.name}: Secret ${ref.name} has key ${ref.key}`);
      env[e.name] = secret.stringData[ref.key];
    }
  }
  return env;
}

test('deploy/kubernetes holds the standalone and the etcd variants', () => {
  assert.deepEqual(MANIFESTS.sort(), ['etcd.yaml', 'standalone.yaml']);
});

for (const file of MANIFESTS) {
  test(`${file}: env, ports, probes and Service match what the gateway reads`, async () => {
    const objs = objects(file);
    const deployment = objs.find((o) => o.kind === 'Deployment');
    assert.ok(deployment, 'a Deployment');
    const pod = deployment.spec.template.spec;
    assert.equal(pod.securityContext.runAsNonRoot, true);
    assert.notEqual(pod.securityContext.runAsUser, 0);
    const [c] = pod.containers;
    const env = containerEnv(c, objs);
    for (const name of Object.keys(env)) assert.ok(KNOWN.has(name), `${name} is not a setting fngate reads`);
    // The settings parse (as the gateway's start would) and the container listens where the ports say.
    const settings = readSettings(env, 2);
    const ports = new Map<string, number>((c.ports as K8s[]).map((p) => [p.name, p.containerPort]));
    assert.equal(ports.get('proxy'), settings.proxyPort);
    assert.equal(ports.get('status'), settings.statusPort);
    assert.equal(ports.get('metrics'), settings.prometheusPort);
    if (ports.has('admin')) {
      assert.equal(ports.get('admin'), settings.adminPort);
      assert.equal(settings.adminHost, '0.0.0.0', 'an exposed Admin API port listens beyond loopback');
    }
    // Probes reach a server that listens beyond loopback, on the status port, at paths the status API serves.
    assert.equal(settings.host, '0.0.0.0');
    assert.equal(settings.statusHost, '0.0.0.0');
    assert.equal(settings.prometheusHost, '0.0.0.0');
    const serve = statusHandler(() => undefined);
    const notReady = statusHandler(() => 'worker count: 2 but status report count: 1');
    for (const [probe, path, readinessFollows] of [
      ['readinessProbe', '/status/ready', true],
      ['livenessProbe', '/status', false],
    ] as const) {
      const get = c[probe].httpGet;
      assert.equal(get.path, path, probe);
      assert.equal(ports.get(get.port) ?? get.port, settings.statusPort, `${probe} port`);
      assert.equal(serve(new Request(`http://pod${get.path}`)).status, 200, probe);
      // Readiness follows the workers; liveness does not (a restarting worker must not get the pod killed).
      assert.equal(notReady(new Request(`http://pod${get.path}`)).status, readinessFollows ? 503 : 200, probe);
    }
    assert.ok(settings.workers >= 1);
    // Drain (SHUTDOWN_TIMEOUT) and the preStop pause fit in the grace period.
    const preStop = c.lifecycle?.preStop?.sleep?.seconds ?? 0;
    assert.ok(settings.shutdownTimeoutMs / 1000 + preStop < pod.terminationGracePeriodSeconds);
    // Every Service port targets a named container port.
    for (const svc of objs.filter((o) => o.kind === 'Service')) {
      assert.deepEqual(svc.spec.selector, deployment.spec.selector.matchLabels);
      for (const p of svc.spec.ports) assert.ok(ports.has(p.targetPort), `Service ${svc.metadata.name} → ${p.targetPort}`);
    }
    if (settings.configFile) {
      // The ConfigMap is mounted where CONFIG_FILE points, and its config is one the gateway loads.
      const mount = (c.volumeMounts as K8s[]).find((m) => settings.configFile!.startsWith(`${m.mountPath}/`));
      assert.ok(mount, 'CONFIG_FILE is inside a volume mount');
      const volume = pod.volumes.find((v: K8s) => v.name === mount.name);
      const cm = objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name === volume.configMap.name);
      const text = cm.data[settings.configFile!.slice(mount.mountPath.length + 1)];
      assert.ok(text, 'the ConfigMap has the CONFIG_FILE key');
      await loadYamlParser();
      const state = parseStandalone(text, { format: 'yaml', env });
      assert.ok(state.items.length > 0);
      const data = (c.volumeMounts as K8s[]).find((m) => m.mountPath === (env.DATA_DIR ?? '/var/lib/fngate'));
      assert.ok(data, 'DATA_DIR is a writable volume (the generated files of the gateway)');
    } else {
      assert.ok(settings.etcdHosts?.length, 'the etcd variant sets ETCD_HOST');
      assert.ok(settings.etcdUser && settings.etcdPassword);
    }
  });
}

test('Dockerfile: Node, npm ci --omit=dev, non-root, exec-form CMD running the built entry, ports and env fngate reads', () => {
  const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
  // Instructions with their continuation lines joined, comments dropped.
  const lines = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const stages = lines.filter((l) => l.startsWith('FROM '));
  for (const s of stages) assert.match(s, /^FROM node:20[-\w.]*( AS \w+)?$/);
  const finalStage = lines.slice(lines.lastIndexOf(stages.at(-1)!));
  assert.ok(lines.some((l) => /^RUN npm ci --omit=dev\b/.test(l)), 'a stage installs the runtime dependencies only');
  const user = finalStage.filter((l) => l.startsWith('USER ')).at(-1);
  assert.ok(user && !/^USER (0|root)\b/.test(user), 'the final stage runs as a non-root user');
  assert.equal(finalStage.filter((l) => l.startsWith('ENTRYPOINT')).length, 0, 'no ENTRYPOINT in front of node');
  const cmd = finalStage.filter((l) => l.startsWith('CMD ')).at(-1)!;
  const argv = JSON.parse(cmd.slice(4)) as string[];
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  assert.deepEqual(argv, ['node', pkg.bin.fngate], 'exec form: node itself is PID 1 and gets SIGTERM');
  assert.ok(finalStage.some((l) => /^COPY --from=\w+ \/app\/dist /.test(l)));
  // The entry the CMD runs is what `npm run build` emits for src/runtime/node.ts.
  assert.equal(pkg.bin.fngate, 'dist/runtime/node.js');
  const env: Record<string, string> = {};
  for (const l of finalStage.filter((x) => x.startsWith('ENV '))) {
    for (const m of l.slice(4).matchAll(/(\w+)=(\S+)/g)) env[m[1]!] = m[2]!;
  }
  for (const name of Object.keys(env)) assert.ok(name === 'NODE_ENV' || KNOWN.has(name), `ENV ${name}`);
  const settings = readSettings(env);
  const expose = finalStage
    .filter((l) => l.startsWith('EXPOSE '))
    .flatMap((l) => l.slice(7).split(/\s+/).map(Number))
    .sort();
  assert.deepEqual(
    expose,
    [settings.proxyPort, settings.adminPort, settings.statusPort!, settings.prometheusPort!].sort(),
  );
  assert.equal(settings.statusHost, '0.0.0.0');
  assert.ok(finalStage.includes('STOPSIGNAL SIGTERM'));
  const dataDirCreated = finalStage.some((l) => l.startsWith('RUN ') && l.includes(settings.dataDir) && l.includes('chown'));
  assert.ok(dataDirCreated, 'DATA_DIR exists and belongs to the user');
});
