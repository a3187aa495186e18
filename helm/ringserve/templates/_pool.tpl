{{/*
One worker pool (prefill or decode): Deployment, headless Service, PodDisruptionBudget and
HorizontalPodAutoscaler. Both pools are rendered by this one template (see pools.yaml); what
differs between them is only their values and their pool-specific flags below.
Args: dict root, component ("prefill" | "decode"), values (.Values.<component>).
*/}}

{{/* Flags only the prefill worker has. Arg: the pool's values. */}}
{{- define "ringserve.poolArgs.prefill" -}}
{{- with .chunkTokens }}
- --chunk-tokens={{ int64 . }}
{{- end }}
{{- with .maxQueuedTokens }}
- --max-queued-tokens={{ int64 . }}
{{- end }}
{{- end }}

{{/* Flags only the decode worker has. Arg: the pool's values. */}}
{{- define "ringserve.poolArgs.decode" -}}
{{- with .maxSeqs }}
- --max-seqs={{ int64 . }}
{{- end }}
{{- with .kvTokens }}
- --kv-tokens={{ int64 . }}
{{- end }}
{{- with .leaseMs }}
- --lease-ms={{ int64 . }}
{{- end }}
{{- end }}

{{/* NCCL env vars of the worker pods. Arg: root. */}}
{{- define "ringserve.ncclEnv" -}}
{{- $n := .Values.nccl }}
{{- with $n.socketIfname }}
- name: NCCL_SOCKET_IFNAME
  value: {{ . | quote }}
{{- end }}
{{- with $n.ibHca }}
- name: NCCL_IB_HCA
  value: {{ . | quote }}
{{- end }}
{{- if kindIs "bool" $n.ibDisable }}
- name: NCCL_IB_DISABLE
  value: {{ ternary "1" "0" $n.ibDisable | quote }}
{{- end }}
{{- with $n.debug }}
- name: NCCL_DEBUG
  value: {{ . | quote }}
{{- end }}
{{- range $k, $v := $n.env }}
- name: {{ $k }}
  value: {{ $v | toString | quote }}
{{- end }}
{{- end }}

{{- define "ringserve.pool" -}}
{{- $root := .root }}
{{- $c := .component }}
{{- $v := .values }}
{{- $name := include "ringserve.componentName" . }}
{{- /* resources, with the GPU limit added when gpus > 0 */}}
{{- $res := deepCopy (default dict $v.resources) }}
{{- if gt (int64 $v.gpus) 0 }}
{{- $limits := default dict $res.limits }}
{{- $_ := set $limits $v.gpuResourceName (int64 $v.gpus) }}
{{- $_ := set $res "limits" $limits }}
{{- end }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "ringserve.labels" . | nindent 4 }}
spec:
  {{- if not $v.autoscaling.enabled }}
  replicas: {{ int64 $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  {{- with $v.strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "ringserve.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "ringserve.selectorLabels" . | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $v.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      {{- include "ringserve.podCommon" . | nindent 6 }}
      containers:
        - name: {{ $c }}
          image: {{ include "ringserve.image" (dict "root" $root "device" $v.device) }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: ["/opt/ringserve/bin/ringserve-{{ $c }}"]
          args:
            - --port={{ int64 $v.port }}
            - --metrics-port={{ int64 $v.metricsPort }}
            - --model={{ include "ringserve.modelDir" $root }}
            - --device={{ $v.device }}
            {{- with $v.threads }}
            - --threads={{ int64 . }}
            {{- end }}
            {{- with (include (printf "ringserve.poolArgs.%s" $c) $v | trim) }}{{ . | nindent 12 }}{{- end }}
            {{- include "ringserve.commonArgs" $root | trim | nindent 12 }}
            {{- with $v.extraArgs }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          env:
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: POD_IP
              valueFrom:
                fieldRef:
                  fieldPath: status.podIP
            {{- with (include "ringserve.ncclEnv" $root | trim) }}{{ . | nindent 12 }}{{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: grpc
              containerPort: {{ int64 $v.port }}
              protocol: TCP
            - name: metrics
              containerPort: {{ int64 $v.metricsPort }}
              protocol: TCP
          {{- include "ringserve.probes" (dict "root" $root "values" $v "port" $v.port) | trim | nindent 10 }}
          {{- include "ringserve.lifecycle" $v | nindent 10 }}
          {{- with $res }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          volumeMounts:
            {{- include "ringserve.volumeMounts" (dict "root" $root "values" $v "shm" true "apiToken" false) | trim | nindent 12 }}
      volumes:
        {{- include "ringserve.volumes" (dict "root" $root "values" $v "shm" true "apiToken" false) | trim | nindent 8 }}
---
# Headless: one DNS A record per ready pod, so the router tracks every worker on its own.
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "ringserve.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  clusterIP: None
  publishNotReadyAddresses: false
  selector:
    {{- include "ringserve.selectorLabels" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ int64 $v.port }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    - name: metrics
      port: {{ int64 $v.metricsPort }}
      targetPort: metrics
      protocol: TCP
      appProtocol: http
{{ include "ringserve.pdb" . }}
{{ include "ringserve.hpa" . }}
{{- end }}
