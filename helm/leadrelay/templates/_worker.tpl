{{/*
A Kafka worker Deployment (dispatcher or source consumers).
dict "root" $ "component" "dispatcher" "values" .Values.dispatcher "args" (list "kafka-dispatch")
*/}}
{{- define "leadrelay.worker" -}}
{{- $root := .root -}}
{{- $v := .values -}}
{{- $ctx := dict "root" $root "component" .component }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "leadrelay.componentName" $ctx }}
  labels:
    {{- include "leadrelay.componentLabels" $ctx | nindent 4 }}
    leadrelay.io/worker-metrics: "true"
spec:
  {{- if not $v.keda.enabled }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "leadrelay.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "leadrelay.podLabels" $ctx | nindent 8 }}
        leadrelay.io/worker-metrics: "true"
      annotations:
        {{- include "leadrelay.podAnnotations" (dict "root" $root "extra" $v.podAnnotations) | nindent 8 }}
    spec:
      {{- include "leadrelay.podSpecCommon" $root | nindent 6 }}
      # SIGTERM: finish the in-flight batch, commit what is done, leave the group.
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      {{- with $v.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          {{- include "leadrelay.containerSecurity" $root | nindent 10 }}
          command: ["leadrelay"]
          args: {{ toJson .args }}
          env:
            {{- include "leadrelay.env" $root | nindent 12 }}
          {{- with include "leadrelay.envFrom" $root | trim }}{{ . | nindent 10 }}{{ end }}
          {{- include "leadrelay.workerProbes" $root | nindent 10 }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          volumeMounts:
            {{- include "leadrelay.volumeMounts" $root | nindent 12 }}
      volumes:
        {{- include "leadrelay.volumes" $root | nindent 8 }}
        - name: data
          emptyDir:
            sizeLimit: 256Mi
{{- end -}}
