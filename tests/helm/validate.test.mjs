// Every object the chart renders, for every values file, must validate against the Kubernetes
// OpenAPI schemas (kubernetes-models) or, for the Prometheus Operator CRD, its CRD schema.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { VALUES, render, lint } from './lib.mjs';

const require = createRequire(import.meta.url);

// The kubernetes-models class for an apiVersion/kind ("v1" is the core group).
function modelClass(apiVersion, kind) {
  const mod = apiVersion === 'monitoring.coreos.com/v1'
    ? '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1'
    : `kubernetes-models/${apiVersion}`;
  let exports;
  try {
    exports = require(mod);
  } catch (e) {
    assert.fail(`no schema package for apiVersion ${apiVersion} (${e.message})`);
  }
  assert.equal(typeof exports[kind], 'function', `no model for ${apiVersion} ${kind}`);
  return exports[kind];
}

for (const values of VALUES) {
  test(`helm lint --strict passes with values/${values}.yaml`, () => {
    const r = lint({ values });
    assert.equal(r.status, 0, `helm lint failed:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
  });

  test(`every object rendered with values/${values}.yaml validates against its schema`, () => {
    const objects = render({ values });
    assert.ok(objects.length >= 8, `only ${objects.length} objects rendered`);
    const names = new Set();
    for (const obj of objects) {
      const id = `${obj.apiVersion} ${obj.kind} ${obj.metadata?.name}`;
      assert.ok(obj.metadata?.name, `${id}: no metadata.name`);
      assert.match(obj.metadata.name, /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, `${id}: not a DNS-1123 label`);
      assert.ok(obj.metadata.name.length <= 63, `${id}: name longer than 63`);
      assert.ok(!names.has(`${obj.kind}/${obj.metadata.name}`), `${id}: rendered twice`);
      names.add(`${obj.kind}/${obj.metadata.name}`);
      const Model = modelClass(obj.apiVersion, obj.kind);
      try {
        new Model(obj).validate();
      } catch (e) {
        assert.fail(`${id} (from ${obj.source}) is invalid: ${e.message}`);
      }
    }
  });
}

test('helm lint --strict fails on values the schema rejects', () => {
  const r = lint({ set: ['prefill.replicas=-3'] });
  assert.notEqual(r.status, 0);
  assert.match(r.stdout + r.stderr, /prefill\.replicas: Must be greater than or equal to 1/);
});

test('the schema check is really on: a wrong object is caught by validate()', () => {
  const Deployment = modelClass('apps/v1', 'Deployment');
  const bad = new Deployment({
    metadata: { name: 'x' },
    spec: { selector: {}, template: { spec: { containers: [{ name: 'c', livenessProbe: { grpc: { port: 'grpc' } } }] } } },
  });
  assert.throws(() => bad.validate(), /grpc\/port must be integer/);
});
