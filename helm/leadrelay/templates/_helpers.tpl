{{/* Names ------------------------------------------------------------------------- */}}

{{- define "leadrelay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "leadrelay.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>", the fullname cut so the whole stays within 63 characters. */}}
{{- define "leadrelay.componentName" -}}
{{- $room := sub 62 (len .component) | int -}}
{{- printf "%s-%s" (include "leadrelay.fullname" .root | trunc $room | trimSuffix "-") .component -}}
{{- end -}}

{{- define "leadrelay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "leadrelay.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels ------------------------------------------------------------------------ */}}

{{- define "leadrelay.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "leadrelay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: leadrelay
{{- end -}}

{{/* Selector labels of one component: dict "root" $ "component" "web" */}}
{{- define "leadrelay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "leadrelay.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "leadrelay.componentLabels" -}}
{{ include "leadrelay.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Image -------------------------------------------------------------------------- */}}

{{- define "leadrelay.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The leadrelay config file: chart-owned keys over the user's `config`. ------------- */}}

{{- define "leadrelay.configData" -}}
{{- /* Embedded: the SQLite queue on the PVC. Distributed: the queue is Kafka, the record
     PostgreSQL (database.url from the Secret), Redis the limiter; the path is only local
     scratch on an emptyDir. */ -}}
{{- $storage := ternary "/var/lib/leadrelay/leadrelay.db" "/var/lib/leadrelay/scratch.db" (eq .Values.mode "embedded") -}}
{{- $owned := dict
      "mode" .Values.mode
      "sandbox" "off"
      "server" (dict "bind" "127.0.0.1:8080" "metrics_port" (int .Values.metrics.port))
      "storage" (dict "path" $storage) -}}
{{- if eq .Values.mode "distributed" -}}
{{- if .Values.kafka.bootstrapServers -}}
{{- $_ := set $owned "kafka" (dict "bootstrap_servers" .Values.kafka.bootstrapServers) -}}
{{- end -}}
{{- if .Values.redis.url -}}
{{- $_ := set $owned "redis" (dict "url" .Values.redis.url) -}}
{{- end -}}
{{- end -}}
{{- $config := mustMergeOverwrite (deepCopy .Values.config) $owned -}}
{{- toYaml $config -}}
{{- end -}}

{{/* Pod pieces every leadrelay container shares. -------------------------------------- */}}

{{- define "leadrelay.podSpecCommon" -}}
serviceAccountName: {{ include "leadrelay.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "leadrelay.podAnnotations" -}}
checksum/config: {{ include "leadrelay.configData" .root | sha256sum }}
{{- with .root.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "leadrelay.podLabels" -}}
{{ include "leadrelay.selectorLabels" . }}
{{- with .root.Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Container env: config path, plain extras, single secret keys. */}}
{{- define "leadrelay.env" -}}
- name: LEADRELAY_CONFIG
  value: /etc/leadrelay/leadrelay.yaml
- name: PYTHONUNBUFFERED
  value: "1"
{{- range .Values.extraEnv }}
- name: {{ .name }}
  value: {{ .value | quote }}
{{- end }}
{{- range .Values.secretEnv }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .key }}
{{- end }}
{{- include "leadrelay.databaseEnv" . }}
{{- end -}}

{{/* The PostgreSQL URL (it carries the password): from a Secret by name, never rendered. */}}
{{- define "leadrelay.databaseEnv" -}}
{{- if and (eq .Values.mode "distributed") .Values.database.secretName }}
- name: LEADRELAY__DATABASE__URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.secretName }}
      key: {{ .Values.database.secretKey }}
{{- end }}
{{- end -}}

{{- define "leadrelay.envFrom" -}}
{{- if .Values.existingSecret }}
envFrom:
  - secretRef:
      name: {{ .Values.existingSecret }}
{{- end }}
{{- end -}}

{{- define "leadrelay.containerSecurity" -}}
image: {{ include "leadrelay.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end -}}

{{/* Mounts: the config file, a writable /tmp and state dir (the root FS is read-only). */}}
{{- define "leadrelay.volumeMounts" -}}
- name: config
  mountPath: /etc/leadrelay
  readOnly: true
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/leadrelay
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "leadrelay.volumes" -}}
- name: config
  configMap:
    name: {{ include "leadrelay.fullname" . }}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Probes of the dispatcher / consumers: their own metrics server on metrics.port. */}}
{{- define "leadrelay.workerProbes" -}}
ports:
  - name: metrics
    containerPort: {{ .Values.metrics.port }}
    protocol: TCP
startupProbe:
  httpGet: {path: /healthz, port: metrics}
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /healthz, port: metrics}
  periodSeconds: 15
  timeoutSeconds: 3
  failureThreshold: 4
readinessProbe:
  httpGet: {path: /readyz, port: metrics}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
{{- end -}}

{{/* Web probes and gunicorn env. */}}
{{- define "leadrelay.webProbes" -}}
ports:
  - name: http
    containerPort: 8080
    protocol: TCP
startupProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 15
  timeoutSeconds: 3
  failureThreshold: 4
readinessProbe:
  httpGet: {path: /readyz, port: http}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end -}}

{{- define "leadrelay.gunicornEnv" -}}
- name: GUNICORN_BIND
  value: "0.0.0.0:8080"
- name: WEB_CONCURRENCY
  value: {{ .Values.web.workers | quote }}
- name: GUNICORN_THREADS
  value: {{ .Values.web.threads | quote }}
- name: GUNICORN_TIMEOUT
  value: {{ .Values.web.timeoutSeconds | quote }}
- name: GUNICORN_GRACEFUL_TIMEOUT
  value: {{ .Values.web.gracefulTimeoutSeconds | quote }}
- name: GUNICORN_KEEPALIVE
  value: {{ .Values.web.keepAliveSeconds | quote }}
- name: PROMETHEUS_MULTIPROC_DIR
  value: /var/run/leadrelay/prometheus
# Worker heartbeat files on tmpfs: a slow disk under /tmp cannot make gunicorn kill workers.
- name: GUNICORN_WORKER_TMP_DIR
  value: /dev/shm
{{- end -}}

{{- define "leadrelay.webCommand" -}}
command: ["gunicorn", "-c", "python:service.web.gunicorn_conf", "service.cli.serve:create_web_app()"]
lifecycle:
  preStop:
    # exec sleep, not the `sleep` handler: that one needs Kubernetes 1.30+.
    exec:
      command: ["sleep", "{{ .Values.web.preStopSleepSeconds }}"]
{{- end -}}
