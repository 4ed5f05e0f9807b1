{{- define "spotd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "spotd.fullname" -}}
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

{{- define "spotd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "spotd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spotd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "spotd.labels" -}}
helm.sh/chart: {{ include "spotd.chart" . }}
{{ include "spotd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: agent
{{- end }}

{{- define "spotd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "spotd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "spotd.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The environment variable of an agent option: SPOTD_ + the name in upper case
with - as _ (config.c, env_name()).
*/}}
{{- define "spotd.envName" -}}
{{- printf "SPOTD_%s" (. | upper | replace "-" "_") }}
{{- end }}

{{/*
Options the chart sets from first-class values or itself; config: must not
repeat them (a second env entry would silently win or lose).
*/}}
{{- define "spotd.reservedOptions" -}}
{{- $r := dict "node-name" "set from the downward API (spec.nodeName)" "health-addr" "health.bindAddress and health.port" "health-max-connections" "health.maxConnections" "dry-run" "dryRun" "force-delete" "forceDelete (it also grants pods/delete)" "log-format" "logFormat" "log-level" "logLevel" }}
{{- toJson $r }}
{{- end }}

{{/*
A value as the agent reads it: booleans true/false, whole numbers without an
exponent, lists one item per line (repeatable options), strings as they are.
*/}}
{{- define "spotd.optionValue" -}}
{{- if kindIs "slice" . }}
{{- join "\n" . }}
{{- else if kindIs "bool" . }}
{{- ternary "true" "false" . }}
{{- else if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) }}
{{- if eq (float64 .) (floor .) }}{{- int64 . }}{{- else }}{{- . }}{{- end }}
{{- else }}
{{- . }}
{{- end }}
{{- end }}
