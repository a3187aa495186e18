// Shared helpers of the chart tests: run helm, render the chart, pick objects out of it.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { parseAllDocuments } from 'yaml';

export const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(HERE, '..', '..');
export const CHART = join(REPO, 'helm', 'ringserve');
export const HELM = process.env.HELM || join(HERE, '.bin', 'helm');
export const RELEASE = 'rs';
export const NAMESPACE = 'inference';
// The values files under tests/helm/values/, by name.
export const VALUES = ['defaults', 'cpu-only', 'tls-on', 'large-cluster'];

if (!existsSync(HELM)) {
  throw new Error(`helm not found at ${HELM}: run tests/helm/install.sh first (or set HELM)`);
}

export function valuesFile(name) {
  return join(HERE, 'values', `${name}.yaml`);
}

// Runs helm; returns {status, stdout, stderr}.
export function helm(args) {
  const r = spawnSync(HELM, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

// Builds helm's values arguments: values (file names under values/), set (list of "k=v"),
// setString (list of "k=v"), setJson (list of "k=json").
function valueArgs({ values = [], set = [], setString = [], setJson = [] } = {}) {
  const args = [];
  for (const v of [].concat(values)) args.push('-f', valuesFile(v));
  for (const s of set) args.push('--set', s);
  for (const s of setString) args.push('--set-string', s);
  for (const s of setJson) args.push('--set-json', s);
  return args;
}

// Renders the chart and returns its objects; each carries the template that produced it in a
// non-enumerable `source` property.
export function render(opts = {}) {
  const r = helm(['template', RELEASE, CHART, '--namespace', NAMESPACE, ...valueArgs(opts)]);
  assert.equal(r.status, 0, `helm template failed:\n${r.stderr}`);
  return parseManifests(r.stdout);
}

export function parseManifests(text) {
  const objects = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length) throw new Error(`rendered YAML does not parse: ${doc.errors[0].message}`);
    const obj = doc.toJS();
    if (obj == null) continue;
    const comments = `${doc.commentBefore ?? ''}\n${doc.contents?.commentBefore ?? ''}`;
    const m = /^ ?Source: (\S+)/m.exec(comments);
    Object.defineProperty(obj, 'source', { value: m ? m[1] : undefined, enumerable: false });
    objects.push(obj);
  }
  return objects;
}

// Renders values that must be rejected; returns helm's error output.
export function renderError(opts = {}) {
  const r = helm(['template', RELEASE, CHART, '--namespace', NAMESPACE, ...valueArgs(opts)]);
  assert.notEqual(r.status, 0, `helm template accepted values it should reject: ${JSON.stringify(opts)}`);
  return r.stderr;
}

export function lint(opts = {}) {
  return helm(['lint', '--strict', CHART, '--namespace', NAMESPACE, ...valueArgs(opts)]);
}

export function ofKind(objects, kind) {
  return objects.filter((o) => o.kind === kind);
}

export function get(objects, kind, name) {
  const o = objects.find((x) => x.kind === kind && x.metadata?.name === name);
  assert.ok(o, `no ${kind} ${name} among: ${objects.map((x) => `${x.kind}/${x.metadata?.name}`).join(', ')}`);
  return o;
}

// The object name of a component for a values file (large-cluster sets fullnameOverride).
export function componentName(values, component) {
  return values === 'large-cluster' ? `ring-${component}` : `${RELEASE}-ringserve-${component}`;
}

export function mainContainer(deployment) {
  const cs = deployment.spec.template.spec.containers;
  assert.equal(cs.length, 1, `${deployment.metadata.name}: expected one container`);
  return cs[0];
}

// The container's --flag=value arguments as a Map (flags without a value map to true).
export function flags(container) {
  const m = new Map();
  for (const a of container.args ?? []) {
    assert.match(a, /^--[a-z0-9-]+(=|$)/, `argument is not a --flag: ${a}`);
    const i = a.indexOf('=');
    const name = i < 0 ? a.slice(2) : a.slice(2, i);
    assert.ok(!m.has(name), `--${name} given twice in ${container.name}'s args`);
    m.set(name, i < 0 ? true : a.slice(i + 1));
  }
  return m;
}

export function envOf(container) {
  return Object.fromEntries((container.env ?? []).map((e) => [e.name, e.value ?? e.valueFrom]));
}

// True when every key/value of `selector` is among `labels`.
export function selects(selector, labels) {
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

// Renders templates/NOTES.txt (helm template skips it and helm install needs a cluster): a copy
// of the chart gets NOTES.txt as a named template and a ConfigMap that holds its output.
export function renderNotes(opts = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'ringserve-notes-'));
  try {
    const chart = join(dir, 'ringserve');
    cpSync(CHART, chart, { recursive: true });
    const notes = readFileSync(join(chart, 'templates', 'NOTES.txt'), 'utf8');
    writeFileSync(join(chart, 'templates', '_notes_test.tpl'), `{{- define "notes.test" -}}\n${notes}{{- end }}\n`);
    writeFileSync(join(chart, 'templates', 'zz-notes-test.yaml'),
      'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ include "notes.test" . | quote }}\n');
    const r = helm(['template', RELEASE, chart, '--namespace', NAMESPACE, '--show-only', 'templates/zz-notes-test.yaml', ...valueArgs(opts)]);
    assert.equal(r.status, 0, `rendering NOTES.txt failed:\n${r.stderr}`);
    return parseManifests(r.stdout)[0].data.notes;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
