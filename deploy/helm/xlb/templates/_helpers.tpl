{{/*
Labels on every object.
*/}}
{{- define "xlb.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "xlb.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that select xlb's pods (immutable in a DaemonSet: never add to them).
*/}}
{{- define "xlb.selectorLabels" -}}
app.kubernetes.io/name: xlb
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The image: repository:tag, the tag defaulting to the chart's appVersion.
*/}}
{{- define "xlb.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
