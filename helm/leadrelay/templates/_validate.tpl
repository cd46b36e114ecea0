{{/* Rules values.schema.json cannot express (they compare two values). */}}
{{- define "leadrelay.validate" -}}
{{- $web := .Values.web -}}
{{- $grace := ternary "embedded.terminationGracePeriodSeconds" "web.terminationGracePeriodSeconds" (eq .Values.mode "embedded") -}}
{{- $period := ternary .Values.embedded.terminationGracePeriodSeconds $web.terminationGracePeriodSeconds (eq .Values.mode "embedded") -}}
{{- $needed := add $web.gracefulTimeoutSeconds $web.preStopSleepSeconds -}}
{{- if le (int $period) (int $needed) -}}
{{- fail (printf "%s (%v) must exceed web.gracefulTimeoutSeconds + web.preStopSleepSeconds (%v): gunicorn would be killed mid-request" $grace $period $needed) -}}
{{- end -}}
{{- if and $web.autoscaling.enabled (gt (int $web.autoscaling.minReplicas) (int $web.autoscaling.maxReplicas)) -}}
{{- fail "web.autoscaling.minReplicas must not exceed maxReplicas" -}}
{{- end -}}
{{- if and $web.autoscaling.enabled (not (dig "requests" "cpu" "" $web.resources)) -}}
{{- fail "web.autoscaling scales on CPU utilisation, which needs web.resources.requests.cpu" -}}
{{- end -}}
{{- range $component := list "dispatcher" "consumers" -}}
{{- $keda := (index $.Values $component).keda -}}
{{- if and $keda.enabled (gt (int $keda.minReplicaCount) (int $keda.maxReplicaCount)) -}}
{{- fail (printf "%s.keda.minReplicaCount must not exceed maxReplicaCount" $component) -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.mode "distributed") .Values.consumers.enabled (not (default dict .Values.config.kafka).sources) -}}
{{- fail "consumers.enabled needs at least one topic binding in config.kafka.sources ({topic, format[, group_id]})" -}}
{{- end -}}
{{- if and (eq .Values.mode "embedded") .Values.consumers.enabled -}}
{{- fail "consumers need mode: distributed (Kafka); embedded mode takes webhooks only" -}}
{{- end -}}
{{- end -}}
