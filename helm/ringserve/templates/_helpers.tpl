{{/*
Names and labels.
*/}}
{{- define "ringserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ringserve.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The name of one component's objects: <fullname>-<component>. Args: dict root, component. */}}
{{- define "ringserve.componentName" -}}
{{- printf "%s-%s" (include "ringserve.fullname" .root | trunc 52 | trimSuffix "-") .component }}
{{- end }}

{{- define "ringserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of a component. Args: dict root, component. */}}
{{- define "ringserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ringserve.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of a component's objects. Args: dict root, component. */}}
{{- define "ringserve.labels" -}}
helm.sh/chart: {{ include "ringserve.chart" .root }}
{{ include "ringserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: ringserve
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "ringserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ringserve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image of a container. scripts/build-image tags the CPU image <appVersion> and the CUDA image
<appVersion>-cuda; without an image.tag, pods on device cuda get the CUDA one. Args: dict root,
device ("cpu" | "cuda").
*/}}
{{- define "ringserve.image" -}}
{{- $v := .root.Values.image }}
{{- $tag := $v.tag }}
{{- if not $tag }}
{{- $tag = printf "%s%s" .root.Chart.AppVersion (ternary "-cuda" "" (eq .device "cuda")) }}
{{- end }}
{{- printf "%s:%s" $v.repository $tag }}
{{- end }}

{{/* The model directory passed as --model. */}}
{{- define "ringserve.modelDir" -}}
{{- $m := .Values.model }}
{{- if $m.subPath }}
{{- printf "%s/%s" (trimSuffix "/" $m.mountPath) (trimPrefix "/" $m.subPath) }}
{{- else }}
{{- $m.mountPath }}
{{- end }}
{{- end }}

{{/* DNS address of a pool's headless Service, as the router's --prefill/--decode. Args: dict root, component. */}}
{{- define "ringserve.poolAddress" -}}
{{- $pool := index .root.Values .component }}
{{- printf "dns:///%s.%s.svc.%s:%d" (include "ringserve.componentName" .) .root.Release.Namespace .root.Values.clusterDomain (int64 $pool.port) }}
{{- end }}

{{/*
Flags shared by every process: TLS and log level. Arg: root.
*/}}
{{- define "ringserve.commonArgs" -}}
- --log-level={{ .Values.logLevel }}
{{- if .Values.tls.enabled }}
{{- $dir := trimSuffix "/" .Values.tls.mountPath }}
- --tls-cert={{ $dir }}/{{ .Values.tls.certKey }}
- --tls-key={{ $dir }}/{{ .Values.tls.keyKey }}
- --tls-ca={{ $dir }}/{{ .Values.tls.caKey }}
{{- end }}
{{- end }}

{{/*
Probes of a component. Args: dict root, values (the component's values), port.
*/}}
{{- define "ringserve.probes" -}}
{{- $p := mustMergeOverwrite (deepCopy .root.Values.probes) (deepCopy (default dict .values.probes)) }}
{{- $mode := $p.mode }}
{{- if eq $mode "auto" }}
{{- $mode = ternary "tcp" "grpc" .root.Values.tls.enabled }}
{{- end }}
{{- $port := int64 .port }}
{{- range $kind := list "startup" "liveness" "readiness" }}
{{- $cfg := index $p $kind }}
{{ $kind }}Probe:
  {{- if eq $mode "grpc" }}
  grpc:
    port: {{ $port }}
    service: {{ ternary "readiness" "liveness" (eq $kind "readiness") }}
  {{- else }}
  tcpSocket:
    port: {{ $port }}
  {{- end }}
  {{- toYaml $cfg | nindent 2 }}
{{- end }}
{{- end }}

{{/*
preStop drain hook. Arg: the component's values.
*/}}
{{- define "ringserve.lifecycle" -}}
lifecycle:
  preStop:
    exec:
      command: ["sleep", "{{ int64 .preStopSleepSeconds }}"]
{{- end }}

{{/*
Volumes of a component's pod. Args: dict root, values, shm (bool), apiToken (bool).
*/}}
{{- define "ringserve.volumes" -}}
{{- $m := .root.Values.model }}
- name: model
{{- if eq $m.source "pvc" }}
  persistentVolumeClaim:
    claimName: {{ $m.pvc.claimName }}
    readOnly: true
{{- else if eq $m.source "hostPath" }}
  hostPath:
    path: {{ $m.hostPath.path }}
    type: {{ $m.hostPath.type }}
{{- else }}
  emptyDir:
    {{- with $m.initContainer.sizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
{{- end }}
- name: tmp
  emptyDir: {}
{{- if .shm }}
- name: dshm
  emptyDir:
    medium: Memory
    {{- with .root.Values.shm.sizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
{{- end }}
{{- if .root.Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .root.Values.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- if and .apiToken .root.Values.apiToken.enabled }}
- name: api-token
  secret:
    secretName: {{ .root.Values.apiToken.secretName }}
    defaultMode: 0440
{{- end }}
{{- with .values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Volume mounts of a component's main container. Args: same as ringserve.volumes.
*/}}
{{- define "ringserve.volumeMounts" -}}
- name: model
  mountPath: {{ .root.Values.model.mountPath }}
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .shm }}
- name: dshm
  mountPath: /dev/shm
{{- end }}
{{- if .root.Values.tls.enabled }}
- name: tls
  mountPath: {{ .root.Values.tls.mountPath }}
  readOnly: true
{{- end }}
{{- if and .apiToken .root.Values.apiToken.enabled }}
- name: api-token
  mountPath: {{ .root.Values.apiToken.mountPath }}
  readOnly: true
{{- end }}
{{- with .values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The init container that writes the model into its emptyDir (model.source=initContainer). Arg: root.
*/}}
{{- define "ringserve.modelInitContainer" -}}
{{- $ic := .Values.model.initContainer }}
{{- $dir := include "ringserve.modelDir" . }}
- name: fetch-model
  {{- if $ic.image.repository }}
  image: {{ printf "%s:%s" $ic.image.repository (default "latest" $ic.image.tag) }}
  {{- else }}
  image: {{ include "ringserve.image" (dict "root" . "device" "cpu") }}
  {{- end }}
  imagePullPolicy: {{ default .Values.image.pullPolicy $ic.image.pullPolicy }}
  {{- if $ic.command }}
  command:
    {{- toYaml $ic.command | nindent 4 }}
  {{- else }}
  command: ["/opt/ringserve/bin/ringctl", "make-model", "--preset", "tiny", "--out", {{ $dir | quote }}]
  {{- end }}
  env:
    - name: RINGSERVE_MODEL_DIR
      value: {{ $dir | quote }}
    {{- with $ic.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $ic.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - name: model
      mountPath: {{ .Values.model.mountPath }}
    - name: tmp
      mountPath: /tmp
{{- end }}

{{/*
Pod-level fields shared by every component. Args: dict root, values.
*/}}
{{- define "ringserve.podCommon" -}}
serviceAccountName: {{ include "ringserve.serviceAccountName" .root }}
automountServiceAccountToken: false
enableServiceLinks: false
terminationGracePeriodSeconds: {{ int64 .values.terminationGracePeriodSeconds }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if eq .root.Values.model.source "initContainer" }}
initContainers:
  {{- include "ringserve.modelInitContainer" .root | trim | nindent 2 }}
{{- end }}
{{- end }}

{{/*
PodDisruptionBudget of a component. Args: dict root, component, values.
*/}}
{{- define "ringserve.pdb" -}}
{{- if .values.pdb.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "ringserve.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "ringserve.labels" . | nindent 4 }}
spec:
  {{- /* minAvailable wins when set (not null) */}}
  {{- if not (kindIs "invalid" .values.pdb.minAvailable) }}
  minAvailable: {{ .values.pdb.minAvailable | toJson }}
  {{- else }}
  maxUnavailable: {{ .values.pdb.maxUnavailable | toJson }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "ringserve.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}

{{/*
HorizontalPodAutoscaler of a component: its pods metric (when it has one) and the CPU
utilisation fallback. Args: dict root, component, values.
*/}}
{{- define "ringserve.hpa" -}}
{{- $a := .values.autoscaling }}
{{- if $a.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "ringserve.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "ringserve.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "ringserve.componentName" . }}
  minReplicas: {{ int64 $a.minReplicas }}
  maxReplicas: {{ int64 $a.maxReplicas }}
  metrics:
    {{- with $a.metric }}
    - type: Pods
      pods:
        metric:
          name: {{ .name }}
        target:
          type: AverageValue
          averageValue: {{ .targetAverageValue | quote }}
    {{- end }}
    {{- if $a.cpuUtilization }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ int64 $a.cpuUtilization }}
    {{- end }}
  {{- with $a.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}
