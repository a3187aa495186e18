// The chart deploys the image scripts/build-image builds, and runs in it what scripts/image-smoke
// runs (tests/helm/image-commands.mjs).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, VALUES, ofKind, render } from './lib.mjs';
import { releaseCommands } from './image-commands.mjs';

const BUILD_IMAGE = join(REPO, 'scripts', 'build-image');
const imageName = (...args) =>
  execFileSync(BUILD_IMAGE, [...args, '--print-name'], { encoding: 'utf8' }).trim();
// The binaries the image build installs in /opt/ringserve/bin.
const BINARIES = /^BINARIES=\(([^)]*)\)$/m.exec(readFileSync(BUILD_IMAGE, 'utf8'))[1].split(/\s+/);

// Every container of a render: [{component, container}].
function containers(objects) {
  return ofKind(objects, 'Deployment').flatMap((d) => {
    const spec = d.spec.template.spec;
    return [...spec.containers, ...(spec.initContainers ?? [])].map((container) => ({
      component: d.metadata.labels['app.kubernetes.io/component'],
      container,
    }));
  });
}

describe('image', () => {
  test('the default tags are the ones scripts/build-image gives', () => {
    const cpu = imageName();
    const cuda = imageName('--cuda');
    assert.notEqual(cpu, cuda);
    // large-cluster names its own registry and tag.
    for (const values of VALUES.filter((v) => v !== 'large-cluster')) {
      const objects = render({ values });
      for (const { component, container } of containers(objects)) {
        // The pools run on their --device; the router and the init container on the CPU.
        const device = flagValue(container, 'device') ?? 'cpu';
        assert.equal(container.image, device === 'cuda' ? cuda : cpu,
          `${values}: ${component}/${container.name} on ${device}`);
      }
    }
  });

  test('image.tag, when set, is every container\'s tag', () => {
    for (const { container } of containers(render({ values: 'defaults', set: ['image.tag=1.2.3'] }))) {
      assert.equal(container.image, `${imageName().split(':')[0]}:1.2.3`, container.name);
    }
  });

  test('every command is a binary the image has', () => {
    for (const values of VALUES) {
      for (const { container } of containers(render({ values }))) {
        const m = /^\/opt\/ringserve\/bin\/(.+)$/.exec(container.command[0]);
        assert.ok(m && BINARIES.includes(m[1]), `${values}: ${container.name} runs ${container.command[0]}`);
      }
    }
  });
});

describe('image-smoke commands', () => {
  const commands = releaseCommands('cpu-only');

  test('are the init container and the three components, from the CPU image', () => {
    assert.deepEqual(commands.map((c) => c.name), ['fetch-model', 'prefill', 'decode', 'router']);
    for (const c of commands) assert.equal(c.image, imageName(), c.name);
  });

  test('are the Deployments\' commands, the router\'s pool addresses on loopback', () => {
    const objects = render({ values: 'cpu-only' });
    for (const c of commands) {
      const { container } = containers(objects).find((x) => x.container.name === c.name);
      assert.deepEqual(c.argv, [...container.command, ...(container.args ?? [])], c.name);
      const changed = c.argv.filter((a, i) => a !== c.loopbackArgv[i]);
      if (c.name !== 'router') {
        assert.deepEqual(changed, [], c.name);
        continue;
      }
      assert.deepEqual(changed.map((a) => a.split('=')[0]), ['--prefill', '--decode']);
      for (const a of changed) {
        const port = /:(\d+)$/.exec(a)[1];
        assert.ok(c.loopbackArgv.includes(`${a.split('=')[0]}=dns:///127.0.0.1:${port}`), a);
      }
    }
  });
});

function flagValue(container, name) {
  const arg = (container.args ?? []).find((a) => a.startsWith(`--${name}=`));
  return arg?.slice(name.length + 3);
}
