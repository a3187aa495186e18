// What the chart must do, checked on the rendered objects of each values file.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  NAMESPACE, VALUES, componentName, envOf, flags, get, mainContainer, ofKind, render,
  renderNotes, selects,
} from './lib.mjs';

const POOLS = ['prefill', 'decode'];
const COMPONENTS = ['router', ...POOLS];
const PORTS = { router: [50051, 9090], prefill: [50061, 9091], decode: [50071, 9092] };

const rendered = Object.fromEntries(VALUES.map((v) => [v, render({ values: v })]));
const deployment = (values, c) => get(rendered[values], 'Deployment', componentName(values, c));

describe('pools', () => {
  test('prefill and decode come from the one shared pool template', () => {
    for (const values of VALUES) {
      for (const c of POOLS) {
        for (const kind of ['Deployment', 'Service', 'PodDisruptionBudget']) {
          const o = get(rendered[values], kind, componentName(values, c));
          assert.equal(o.source, 'ringserve/templates/pools.yaml', `${values}: ${kind} ${c}`);
        }
      }
    }
  });

  test('each component runs its binary with its ports', () => {
    for (const values of VALUES) {
      for (const c of COMPONENTS) {
        const ctr = mainContainer(deployment(values, c));
        assert.deepEqual(ctr.command, [`/opt/ringserve/bin/ringserve-${c}`]);
        const f = flags(ctr);
        const [port, metricsPort] = PORTS[c];
        assert.equal(f.get('port'), String(port), `${values} ${c} --port`);
        assert.equal(f.get('metrics-port'), String(metricsPort), `${values} ${c} --metrics-port`);
        const ports = Object.fromEntries(ctr.ports.map((p) => [p.name, p.containerPort]));
        assert.deepEqual(ports, { grpc: port, metrics: metricsPort }, `${values} ${c} ports`);
      }
    }
  });

  test('each pool has a headless Service selecting its pods, and the router dials it by DNS', () => {
    for (const values of VALUES) {
      const router = flags(mainContainer(deployment(values, 'router')));
      for (const c of POOLS) {
        const name = componentName(values, c);
        const svc = get(rendered[values], 'Service', name);
        assert.equal(svc.spec.clusterIP, 'None', `${values}: ${name} is not headless`);
        assert.equal(svc.spec.publishNotReadyAddresses, false);
        const podLabels = deployment(values, c).spec.template.metadata.labels;
        assert.ok(selects(svc.spec.selector, podLabels), `${values}: Service ${name} does not select the ${c} pods`);
        const otherPods = deployment(values, c === 'prefill' ? 'decode' : 'prefill').spec.template.metadata.labels;
        assert.ok(!selects(svc.spec.selector, otherPods), `${values}: Service ${name} also selects the other pool`);
        const grpc = svc.spec.ports.find((p) => p.name === 'grpc');
        assert.equal(grpc.port, PORTS[c][0]);
        assert.equal(grpc.targetPort, 'grpc');
        assert.equal(router.get(c), `dns:///${name}.${NAMESPACE}.svc.cluster.local:${PORTS[c][0]}`,
          `${values}: router --${c}`);
      }
      const routerSvc = get(rendered[values], 'Service', componentName(values, 'router'));
      assert.notEqual(routerSvc.spec.clusterIP, 'None');
      assert.deepEqual(routerSvc.spec.ports.map((p) => [p.name, p.port]), [['grpc', 50051], ['metrics', 9090]]);
      assert.ok(selects(routerSvc.spec.selector, deployment(values, 'router').spec.template.metadata.labels));
    }
  });

  test('router runs several replicas by default', () => {
    assert.equal(deployment('defaults', 'router').spec.replicas, 2);
  });

  test('numeric flags render as plain integers', () => {
    const f = flags(mainContainer(deployment('large-cluster', 'decode')));
    assert.equal(f.get('kv-tokens'), '4194304');
    assert.equal(f.get('max-seqs'), '256');
    assert.equal(f.get('lease-ms'), '20000');
    const p = flags(mainContainer(deployment('large-cluster', 'prefill')));
    assert.equal(p.get('max-queued-tokens'), '1048576');
    assert.equal(p.get('chunk-tokens'), '4096');
    for (const values of VALUES) {
      for (const c of COMPONENTS) {
        for (const a of mainContainer(deployment(values, c)).args) {
          assert.doesNotMatch(a, /\de[+-]\d/, `${values} ${c}: float formatting in ${a}`);
        }
      }
    }
  });

  test('the router asks for the lease the decode workers grant', () => {
    for (const values of VALUES) {
      const lease = flags(mainContainer(deployment(values, 'decode'))).get('lease-ms');
      assert.equal(flags(mainContainer(deployment(values, 'router'))).get('lease-ms'), lease, values);
    }
  });

  test('per-pool scheduling settings, extraArgs and extraEnv pass through', () => {
    const pod = deployment('large-cluster', 'prefill').spec.template.spec;
    assert.deepEqual(pod.nodeSelector, { 'nvidia.com/gpu.product': 'NVIDIA-H200' });
    assert.equal(pod.tolerations[0].key, 'nvidia.com/gpu');
    assert.ok(pod.affinity.podAntiAffinity);
    assert.equal(pod.runtimeClassName, 'nvidia');
    assert.equal(pod.priorityClassName, 'inference-high');
    const ctr = mainContainer(deployment('large-cluster', 'prefill'));
    assert.equal(ctr.args.at(-1), '--threads=16');
    assert.equal(envOf(ctr).CUDA_DEVICE_MAX_CONNECTIONS, '1');
    // ...and stay in their own pool.
    const decodeCtr = mainContainer(deployment('large-cluster', 'decode'));
    assert.ok(!decodeCtr.args.includes('--threads=16'));
    assert.equal(deployment('large-cluster', 'decode').spec.template.spec.priorityClassName, undefined);
  });
});

describe('GPUs', () => {
  test('GPU values request nvidia.com/gpu and --device=cuda', () => {
    for (const values of ['defaults', 'tls-on', 'large-cluster']) {
      for (const c of POOLS) {
        const ctr = mainContainer(deployment(values, c));
        assert.equal(ctr.resources.limits['nvidia.com/gpu'], 1, `${values} ${c}`);
        assert.equal(flags(ctr).get('device'), 'cuda');
      }
      const router = mainContainer(deployment(values, 'router'));
      assert.equal(router.resources?.limits?.['nvidia.com/gpu'], undefined, `${values}: the router got a GPU`);
    }
  });

  test('cpu-only values request no GPU anywhere and run --device=cpu', () => {
    const text = JSON.stringify(rendered['cpu-only']);
    assert.doesNotMatch(text, /nvidia\.com\/gpu/);
    for (const c of POOLS) {
      const ctr = mainContainer(deployment('cpu-only', c));
      assert.equal(flags(ctr).get('device'), 'cpu');
      assert.equal(flags(ctr).get('threads'), '4');
    }
  });

  test('gpus and gpuResourceName set the GPU limit', () => {
    const objs = render({ set: ['decode.gpus=2', 'decode.gpuResourceName=nvidia.com/mig-3g.71gb'] });
    const lim = mainContainer(get(objs, 'Deployment', componentName('defaults', 'decode'))).resources.limits;
    assert.equal(lim['nvidia.com/mig-3g.71gb'], 2);
    assert.equal(lim['nvidia.com/gpu'], undefined);
    assert.equal(lim.memory, '64Gi', 'the other limits are kept');
  });

  test('NCCL settings become env vars of the worker pods only', () => {
    for (const c of POOLS) {
      const env = envOf(mainContainer(deployment('large-cluster', c)));
      assert.equal(env.NCCL_SOCKET_IFNAME, 'eth0');
      assert.equal(env.NCCL_IB_HCA, 'mlx5_0,mlx5_1,mlx5_2,mlx5_3');
      assert.equal(env.NCCL_IB_DISABLE, '0');
      assert.equal(env.NCCL_DEBUG, 'WARN');
      assert.equal(env.NCCL_IB_GID_INDEX, '3');
      assert.equal(env.NCCL_NET_GDR_LEVEL, 'PHB');
    }
    const routerEnv = envOf(mainContainer(deployment('large-cluster', 'router')));
    assert.deepEqual(Object.keys(routerEnv).filter((k) => k.startsWith('NCCL_')), []);
    for (const c of POOLS) {
      const env = envOf(mainContainer(deployment('defaults', c)));
      assert.deepEqual(Object.keys(env).filter((k) => k.startsWith('NCCL_')), [], 'unset NCCL values add no env');
    }
  });

  test('worker pods get a memory-backed /dev/shm', () => {
    for (const values of VALUES) {
      for (const c of POOLS) {
        const pod = deployment(values, c).spec.template.spec;
        const shm = pod.volumes.find((v) => v.name === 'dshm');
        assert.equal(shm?.emptyDir?.medium, 'Memory', `${values} ${c}`);
        assert.ok(mainContainer(deployment(values, c)).volumeMounts.some((m) => m.name === 'dshm' && m.mountPath === '/dev/shm'));
      }
    }
  });
});

describe('probes and draining', () => {
  test('gRPC probes: startup and liveness ask "liveness", readiness asks "readiness", on the gRPC port', () => {
    for (const values of ['defaults', 'cpu-only', 'large-cluster']) {
      for (const c of COMPONENTS) {
        const ctr = mainContainer(deployment(values, c));
        const port = PORTS[c][0];
        assert.deepEqual(ctr.startupProbe.grpc, { port, service: 'liveness' }, `${values} ${c} startup`);
        assert.deepEqual(ctr.livenessProbe.grpc, { port, service: 'liveness' }, `${values} ${c} liveness`);
        assert.deepEqual(ctr.readinessProbe.grpc, { port, service: 'readiness' }, `${values} ${c} readiness`);
      }
    }
    const ctr = mainContainer(deployment('large-cluster', 'prefill'));
    assert.equal(ctr.startupProbe.failureThreshold, 180, 'probe settings come from values');
  });

  test('with TLS the probes check the gRPC port over TCP (the kubelet speaks no TLS)', () => {
    for (const c of COMPONENTS) {
      const ctr = mainContainer(deployment('tls-on', c));
      for (const p of ['startupProbe', 'livenessProbe', 'readinessProbe']) {
        assert.equal(ctr[p].grpc, undefined, `${c} ${p}`);
        assert.deepEqual(ctr[p].tcpSocket, { port: PORTS[c][0] }, `${c} ${p}`);
      }
    }
  });

  test('preStop sleeps, and the grace period covers a long prefill', () => {
    for (const values of VALUES) {
      for (const c of COMPONENTS) {
        const d = deployment(values, c);
        const sleep = mainContainer(d).lifecycle.preStop.exec.command;
        assert.equal(sleep[0], 'sleep');
        const seconds = Number(sleep[1]);
        assert.ok(seconds >= 5, `${values} ${c}: preStop sleeps ${seconds}s`);
        assert.ok(d.spec.template.spec.terminationGracePeriodSeconds > seconds, `${values} ${c}: grace <= preStop`);
      }
    }
    assert.equal(deployment('defaults', 'prefill').spec.template.spec.terminationGracePeriodSeconds, 600);
    assert.ok(deployment('defaults', 'decode').spec.template.spec.terminationGracePeriodSeconds >= 300);
    assert.equal(deployment('large-cluster', 'prefill').spec.template.spec.terminationGracePeriodSeconds, 900);
  });
});

describe('disruption budgets and autoscaling', () => {
  test('a PodDisruptionBudget per component selects exactly its pods', () => {
    for (const values of VALUES) {
      const pdbs = ofKind(rendered[values], 'PodDisruptionBudget');
      assert.equal(pdbs.length, 3, values);
      for (const c of COMPONENTS) {
        const pdb = get(rendered[values], 'PodDisruptionBudget', componentName(values, c));
        assert.equal(pdb.apiVersion, 'policy/v1');
        for (const other of COMPONENTS) {
          const labels = deployment(values, other).spec.template.metadata.labels;
          assert.equal(selects(pdb.spec.selector.matchLabels, labels), other === c, `${values}: PDB ${c} vs ${other} pods`);
        }
      }
    }
    const lc = rendered['large-cluster'];
    assert.equal(get(lc, 'PodDisruptionBudget', 'ring-prefill').spec.maxUnavailable, '10%');
    assert.equal(get(lc, 'PodDisruptionBudget', 'ring-decode').spec.maxUnavailable, 2);
    const router = get(lc, 'PodDisruptionBudget', 'ring-router').spec;
    assert.equal(router.minAvailable, 2);
    assert.equal(router.maxUnavailable, undefined, 'minAvailable wins over the default maxUnavailable');
  });

  test('without autoscaling: no HPA and replicas from values', () => {
    assert.deepEqual(ofKind(rendered.defaults, 'HorizontalPodAutoscaler'), []);
    assert.equal(deployment('cpu-only', 'prefill').spec.replicas, 2);
    assert.equal(deployment('cpu-only', 'decode').spec.replicas, 2);
    const objs = render({ set: ['prefill.replicas=7'] });
    assert.equal(get(objs, 'Deployment', componentName('defaults', 'prefill')).spec.replicas, 7);
    assert.equal(get(objs, 'Deployment', componentName('defaults', 'decode')).spec.replicas, 1);
  });

  const expected = {
    'tls-on': {
      prefill: ['ringserve_prefill_queued_prompt_tokens', '65536', 2, 12, 80],
      decode: ['ringserve_decode_kv_tokens_used_ratio', '0.8', 3, 16, 80],
    },
    'large-cluster': {
      prefill: ['ringserve_prefill_queued_prompt_tokens', '131072', 8, 64, 85],
      decode: ['ringserve_decode_kv_tokens_used_ratio', '700m', 16, 128, null],
    },
  };
  for (const [values, pools] of Object.entries(expected)) {
    test(`HPAs per pool on the worker metrics with a CPU fallback (${values})`, () => {
      for (const [c, [metric, target, min, max, cpu]] of Object.entries(pools)) {
        const name = componentName(values, c);
        const hpa = get(rendered[values], 'HorizontalPodAutoscaler', name);
        assert.equal(hpa.apiVersion, 'autoscaling/v2');
        assert.deepEqual(hpa.spec.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name });
        assert.equal(hpa.spec.minReplicas, min);
        assert.equal(hpa.spec.maxReplicas, max);
        const pods = hpa.spec.metrics.filter((m) => m.type === 'Pods');
        assert.deepEqual(pods, [{ type: 'Pods', pods: { metric: { name: metric }, target: { type: 'AverageValue', averageValue: target } } }]);
        const cpuMetric = hpa.spec.metrics.find((m) => m.type === 'Resource');
        if (cpu === null) {
          assert.equal(cpuMetric, undefined);
        } else {
          assert.deepEqual(cpuMetric.resource, { name: 'cpu', target: { type: 'Utilization', averageUtilization: cpu } });
        }
        assert.equal(deployment(values, c).spec.replicas, undefined, `${values} ${c}: replicas set although the HPA owns them`);
      }
    });
  }

  test('the chart\'s default HPA metrics are the workers\' own gauges', () => {
    const objs = render({ set: ['prefill.autoscaling.enabled=true', 'decode.autoscaling.enabled=true'] });
    const metric = (c) => get(objs, 'HorizontalPodAutoscaler', componentName('defaults', c)).spec.metrics;
    assert.deepEqual(metric('prefill')[0].pods.metric.name, 'ringserve_prefill_queued_prompt_tokens');
    assert.deepEqual(metric('decode')[0].pods.metric.name, 'ringserve_decode_kv_tokens_used_ratio');
    for (const c of POOLS) {
      assert.deepEqual(metric(c)[1].resource.target, { type: 'Utilization', averageUtilization: 80 });
      const hpa = get(objs, 'HorizontalPodAutoscaler', componentName('defaults', c)).spec;
      assert.equal(hpa.minReplicas, 1);
      assert.equal(hpa.maxReplicas, 8);
    }
  });

  test('metric=null scales a pool on CPU only', () => {
    const objs = render({ set: ['decode.autoscaling.enabled=true', 'decode.autoscaling.metric=null'] });
    const hpa = get(objs, 'HorizontalPodAutoscaler', componentName('defaults', 'decode'));
    assert.deepEqual(hpa.spec.metrics.map((m) => m.type), ['Resource']);
  });

  test('the router HPA scales on CPU only', () => {
    const hpa = get(rendered['tls-on'], 'HorizontalPodAutoscaler', componentName('tls-on', 'router'));
    assert.deepEqual(hpa.spec.metrics.map((m) => m.type), ['Resource']);
    assert.equal(hpa.spec.minReplicas, 2);
    assert.equal(hpa.spec.maxReplicas, 6);
  });
});

describe('model weights', () => {
  const modelVolume = (values, c) => deployment(values, c).spec.template.spec.volumes.find((v) => v.name === 'model');
  const modelMount = (values, c) => mainContainer(deployment(values, c)).volumeMounts.find((m) => m.name === 'model');

  test('source=pvc mounts the claim read-only and passes its path as --model', () => {
    for (const c of COMPONENTS) {
      assert.deepEqual(modelVolume('defaults', c).persistentVolumeClaim, { claimName: 'ringserve-model', readOnly: true });
      assert.deepEqual(modelMount('defaults', c), { name: 'model', mountPath: '/models', readOnly: true });
      assert.equal(flags(mainContainer(deployment('defaults', c))).get('model'), '/models');
    }
  });

  test('source=hostPath mounts the node directory read-only', () => {
    for (const c of COMPONENTS) {
      assert.deepEqual(modelVolume('large-cluster', c).hostPath, { path: '/mnt/nvme/models', type: 'Directory' });
      assert.equal(modelMount('large-cluster', c).readOnly, true);
      assert.equal(flags(mainContainer(deployment('large-cluster', c))).get('model'), '/models/Ring-flash-linear-2.0');
    }
  });

  test('source=initContainer fills an emptyDir that the server mounts read-only', () => {
    for (const c of COMPONENTS) {
      const pod = deployment('cpu-only', c).spec.template.spec;
      assert.ok(modelVolume('cpu-only', c).emptyDir);
      assert.equal(modelMount('cpu-only', c).readOnly, true);
      assert.equal(pod.initContainers.length, 1);
      const init = pod.initContainers[0];
      assert.deepEqual(init.command, ['/opt/ringserve/bin/ringctl', 'make-model', '--preset', 'tiny', '--out', '/models/tiny']);
      const mount = init.volumeMounts.find((m) => m.name === 'model');
      assert.equal(mount.mountPath, '/models');
      assert.notEqual(mount.readOnly, true, 'the init container must be able to write');
      assert.equal(flags(mainContainer(deployment('cpu-only', c))).get('model'), '/models/tiny');
    }
    for (const values of ['defaults', 'large-cluster']) {
      assert.equal(deployment(values, 'prefill').spec.template.spec.initContainers, undefined);
    }
  });
});

describe('security', () => {
  test('every pod and container runs as non-root without privilege escalation', () => {
    for (const values of VALUES) {
      for (const c of COMPONENTS) {
        const pod = deployment(values, c).spec.template.spec;
        assert.equal(pod.securityContext.runAsNonRoot, true);
        assert.ok(pod.securityContext.runAsUser > 0);
        for (const ctr of [...pod.containers, ...(pod.initContainers ?? [])]) {
          assert.equal(ctr.securityContext.allowPrivilegeEscalation, false, `${values} ${c} ${ctr.name}`);
          assert.equal(ctr.securityContext.readOnlyRootFilesystem, true);
          assert.deepEqual(ctr.securityContext.capabilities.drop, ['ALL']);
        }
        assert.equal(pod.automountServiceAccountToken, false);
      }
    }
  });

  test('TLS on: every process gets the cert flags and the Secret mounted read-only', () => {
    for (const c of COMPONENTS) {
      const d = deployment('tls-on', c);
      const ctr = mainContainer(d);
      const f = flags(ctr);
      const vol = d.spec.template.spec.volumes.find((v) => v.secret?.secretName === 'ringserve-tls');
      assert.ok(vol, `${c}: no TLS secret volume`);
      const mount = ctr.volumeMounts.find((m) => m.name === vol.name);
      assert.equal(mount.readOnly, true);
      assert.equal(f.get('tls-cert'), `${mount.mountPath}/tls.crt`);
      assert.equal(f.get('tls-key'), `${mount.mountPath}/tls.key`);
      assert.equal(f.get('tls-ca'), `${mount.mountPath}/ca.crt`);
    }
  });

  test('API token on: only the router gets --api-token-file and the token Secret', () => {
    const d = deployment('tls-on', 'router');
    const ctr = mainContainer(d);
    const vol = d.spec.template.spec.volumes.find((v) => v.secret?.secretName === 'ringserve-api-token');
    assert.ok(vol);
    const mount = ctr.volumeMounts.find((m) => m.name === vol.name);
    assert.equal(mount.readOnly, true);
    assert.equal(flags(ctr).get('api-token-file'), `${mount.mountPath}/token`);
    for (const c of POOLS) {
      const pd = deployment('tls-on', c);
      assert.ok(!flags(mainContainer(pd)).has('api-token-file'));
      assert.ok(!pd.spec.template.spec.volumes.some((v) => v.secret?.secretName === 'ringserve-api-token'));
    }
  });

  test('TLS and token off: no TLS flags and no Secret volumes', () => {
    for (const values of ['defaults', 'cpu-only', 'large-cluster']) {
      for (const c of COMPONENTS) {
        const d = deployment(values, c);
        const f = flags(mainContainer(d));
        for (const k of ['tls-cert', 'tls-key', 'tls-ca', 'api-token-file']) assert.ok(!f.has(k), `${values} ${c} --${k}`);
        assert.ok(!d.spec.template.spec.volumes.some((v) => v.secret), `${values} ${c}: a Secret volume`);
      }
    }
  });
});

describe('monitoring and notes', () => {
  test('ServiceMonitor only when enabled, scraping the metrics port of every component', () => {
    for (const values of ['defaults', 'cpu-only', 'large-cluster']) {
      assert.deepEqual(ofKind(rendered[values], 'ServiceMonitor'), [], values);
    }
    const [sm, ...more] = ofKind(rendered['tls-on'], 'ServiceMonitor');
    assert.equal(more.length, 0);
    assert.equal(sm.apiVersion, 'monitoring.coreos.com/v1');
    assert.equal(sm.metadata.labels.release, 'prometheus');
    assert.deepEqual(sm.spec.endpoints.map((e) => [e.port, e.path]), [['metrics', '/metrics']]);
    for (const svc of ofKind(rendered['tls-on'], 'Service')) {
      assert.ok(selects(sm.spec.selector.matchLabels, svc.metadata.labels), `${svc.metadata.name} not scraped`);
      const component = svc.metadata.labels['app.kubernetes.io/component'];
      assert.ok(sm.spec.selector.matchExpressions[0].values.includes(component));
      assert.ok(svc.spec.ports.some((p) => p.name === 'metrics'));
    }
  });

  test('NOTES.txt tells how to call the router with grpcurl and ringctl', () => {
    const notes = renderNotes({ values: 'defaults' });
    assert.match(notes, /port-forward svc\/rs-ringserve-router 50051:50051/);
    assert.match(notes, /grpcurl -plaintext .*ringserve\.v1\.Generation\/Generate/s);
    assert.match(notes, /ringctl generate --router localhost:50051/);
    const tls = renderNotes({ values: 'tls-on' });
    assert.match(tls, /grpcurl -cacert ca\.crt -H "authorization: Bearer \$RINGSERVE_TOKEN"/);
    assert.match(tls, /HPA 2-12 pods on ringserve_prefill_queued_prompt_tokens/);
  });
});
