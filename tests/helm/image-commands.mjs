// The processes a release starts, taken from the rendered chart: scripts/image-smoke runs exactly
// these from the image, and image.test.mjs checks them against the image build.
//
//   node tests/helm/image-commands.mjs [VALUES]   (default: cpu-only, a values file name under
//                                                  tests/helm/values/)
// prints one line per container, fields separated by tabs: name, image, then the command and
// its arguments. The router's dns:/// pool addresses point at 127.0.0.1 (same ports), where the
// smoke test runs the pools; nothing else differs from the Deployments.
import { fileURLToPath } from 'node:url';
import { mainContainer, ofKind, render } from './lib.mjs';

// The order the smoke test starts them in: the model first (the init container), the router last.
const ORDER = ['fetch-model', 'prefill', 'decode', 'router'];

// A dns:///<service>:<port> worker address, as the router's --prefill/--decode take it.
const POOL_ADDRESS = /^(--(?:prefill|decode)=dns:\/\/\/)[^:,]+(:\d+)$/;

// Returns [{name, image, argv, loopbackArgv}] for the init container and each component.
export function releaseCommands(values = 'cpu-only') {
  const byName = new Map();
  for (const d of ofKind(render({ values }), 'Deployment')) {
    const component = d.metadata.labels['app.kubernetes.io/component'];
    const containers = [[component, mainContainer(d)]];
    for (const ic of d.spec.template.spec.initContainers ?? []) containers.push([ic.name, ic]);
    for (const [name, c] of containers) {
      const argv = [...c.command, ...(c.args ?? [])];
      byName.set(name, {
        name,
        image: c.image,
        argv,
        loopbackArgv: argv.map((a) => a.replace(POOL_ADDRESS, '$1127.0.0.1$2')),
      });
    }
  }
  return ORDER.filter((n) => byName.has(n)).map((n) => byName.get(n));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const c of releaseCommands(process.argv[2])) {
    console.log([c.name, c.image, ...c.loopbackArgv].join('\t'));
  }
}
