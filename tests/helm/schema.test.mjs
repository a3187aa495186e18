// values.schema.json (and the chart's cross-field checks) reject bad values with a message that
// names the value.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { render, renderError } from './lib.mjs';

const rejected = [
  // [what, values, expected message]
  ['negative replicas', { set: ['prefill.replicas=-1'] }, /prefill\.replicas: Must be greater than or equal to 1/],
  ['zero decode replicas', { set: ['decode.replicas=0'] }, /decode\.replicas: Must be greater than or equal to 1/],
  ['replicas of the wrong type', { setString: ['router.replicas=two'] }, /router\.replicas: Invalid type\. Expected: integer, given: string/],
  ['unknown device', { set: ['prefill.device=tpu'] }, /prefill\.device.*must be one of the following: "cpu", "cuda"/],
  ['unknown model source', { set: ['model.source=s3'] }, /model\.source.*must be one of the following: "pvc", "hostPath", "initContainer"/],
  ['missing PVC claim name when source=pvc', { set: ['model.source=pvc', 'model.pvc.claimName='] }, /model\.pvc\.claimName: String length must be greater than or equal to 1/],
  ['missing hostPath path when source=hostPath', { set: ['model.source=hostPath'] }, /model\.hostPath\.path: Does not match pattern '\^\/'/],
  ['absolute model.subPath', { set: ['model.subPath=/abs'] }, /model\.subPath: Does not match pattern/],
  ['TLS on without a Secret', { set: ['tls.enabled=true'] }, /tls\.secretName: String length must be greater than or equal to 1/],
  ['API token on without a Secret', { set: ['apiToken.enabled=true'] }, /apiToken\.secretName: String length must be greater than or equal to 1/],
  ['cuda pool without a GPU', { set: ['decode.gpus=0'] }, /decode\.gpus: Must be greater than or equal to 1/],
  ['cpu pool with a GPU', { set: ['prefill.device=cpu', 'prefill.gpus=1'] }, /prefill\.gpus: Must be less than or equal to 0/],
  ['port out of range', { set: ['decode.port=70000'] }, /decode\.port: Must be less than or equal to 65535/],
  ['misspelt key', { set: ['prefill.replica=3'] }, /prefill: Additional property replica is not allowed/],
  ['unknown top-level key', { set: ['prefil.replicas=3'] }, /Additional property prefil is not allowed/],
  ['unknown log level', { set: ['logLevel=verbose'] }, /logLevel.*must be one of the following/],
  ['HPA target that is no quantity', { set: ['prefill.autoscaling.metric.targetAverageValue=lots'] }, /prefill\.autoscaling\.metric\.targetAverageValue: Does not match pattern/],
  ['HPA without a metric name', { set: ['decode.autoscaling.metric.name='] }, /decode\.autoscaling\.metric\.name: String length must be greater than or equal to 1/],
  ['negative HPA bound', { set: ['decode.autoscaling.minReplicas=0'] }, /decode\.autoscaling\.minReplicas: Must be greater than or equal to 1/],
  ['extraArgs that are no flags', { set: ['prefill.extraArgs={chunk}'] }, /prefill\.extraArgs\.0: Does not match pattern/],
  ['a non-NCCL variable under nccl.env', { set: ['nccl.env.FOO=1'] }, /nccl\.env.*Does not match pattern/],
  ['unknown probe mode', { set: ['probes.mode=http'] }, /probes\.mode.*must be one of the following: "auto", "grpc", "tcp"/],
  ['unknown service type', { set: ['router.service.type=Ingress'] }, /router\.service\.type.*must be one of the following/],
  ['PDB that is no count or percentage', { set: ['prefill.pdb.maxUnavailable=half'] }, /prefill\.pdb\.maxUnavailable: Does not match pattern/],
  // cross-field rules, checked by templates/validate.yaml
  ['HPA min above max', { set: ['prefill.autoscaling.enabled=true', 'prefill.autoscaling.minReplicas=5', 'prefill.autoscaling.maxReplicas=2'] },
    /prefill\.autoscaling: minReplicas \(5\) must not exceed maxReplicas \(2\)/],
  ['CPU fallback without CPU requests', { set: ['decode.autoscaling.enabled=true', 'decode.resources.requests=null'] },
    /decode\.autoscaling\.cpuUtilization needs decode\.resources\.requests\.cpu/],
  ['an HPA with no metric at all', { set: ['decode.autoscaling.enabled=true', 'decode.autoscaling.metric=null', 'decode.autoscaling.cpuUtilization=null'] },
    /decode\.autoscaling has no metric/],
  ['grace period shorter than the preStop sleep', { set: ['prefill.terminationGracePeriodSeconds=10'] },
    /prefill\.terminationGracePeriodSeconds \(10\) must exceed prefill\.preStopSleepSeconds \(15\)/],
  ['preStop shorter than the router\'s DNS re-resolve', { set: ['router.resolveIntervalMs=30000'] },
    /preStopSleepSeconds \(15 s\) must be at least router\.resolveIntervalMs \(30000 ms\)/],
];

for (const [what, values, message] of rejected) {
  test(`rejected: ${what}`, () => {
    assert.match(renderError(values), message);
  });
}

const accepted = [
  ['threads and admission bounds', { set: ['prefill.threads=8', 'prefill.maxQueuedTokens=262144', 'decode.kvTokens=1048576'] }],
  ['a CPU pool next to a GPU pool', { set: ['prefill.device=cpu', 'prefill.gpus=0'] }],
  ['hostPath with a path', { set: ['model.source=hostPath', 'model.hostPath.path=/data/models'] }],
  ['initContainer with a custom command', { set: ['model.source=initContainer', 'model.initContainer.command={sh,-c,cp -r /src/* $RINGSERVE_MODEL_DIR}'] }],
  ['HPA without the CPU fallback', { set: ['decode.autoscaling.enabled=true', 'decode.autoscaling.cpuUtilization=null'] }],
  ['probes forced to gRPC with TLS', { set: ['tls.enabled=true', 'tls.secretName=s', 'probes.mode=grpc'] }],
];
for (const [what, values] of accepted) {
  test(`accepted: ${what}`, () => {
    assert.ok(render(values).length > 0);
  });
}
