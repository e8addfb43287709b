{{/* The chart's name. */}}
{{- define "llmloom.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of the release's object names. */}}
{{- define "llmloom.fullname" -}}
{{- if contains (include "llmloom.name" .) .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "llmloom.name" .) | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The recommended labels, on every object of the chart. */}}
{{- define "llmloom.labels" -}}
app.kubernetes.io/name: {{ include "llmloom.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llmloom
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Labels that select the pods of one component (argument: dict "ctx" . "component" name). */}}
{{- define "llmloom.selector" -}}
app.kubernetes.io/name: {{ include "llmloom.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "llmloom.tag" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{/* The Redis URL as the components use it (an env entry named LLMLOOM_REDIS_URL). */}}
{{- define "llmloom.redisEnv" -}}
{{- if .Values.redis.enabled }}
- name: LLMLOOM_REDIS_URL
  value: {{ printf "redis://%s-redis.%s.svc:6379/0" (include "llmloom.fullname" .) .Release.Namespace | quote }}
{{- else if .Values.redis.external.urlSecretName }}
- name: LLMLOOM_REDIS_URL
  valueFrom:
    secretKeyRef: {name: {{ .Values.redis.external.urlSecretName }}, key: url}
{{- else }}
- name: LLMLOOM_REDIS_URL
  value: {{ required "redis.external.url (or urlSecretName) is required when redis.enabled is false" .Values.redis.external.url | quote }}
{{- end }}
{{- end -}}

{{/* Settings from a map of extra environment variables. */}}
{{- define "llmloom.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}
