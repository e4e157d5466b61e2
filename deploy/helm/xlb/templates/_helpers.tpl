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

{{/*
The memory xlb takes on a node, in MiB: what `xlb run` prints at start ("memory: ... = N MiB")
and xlb::memory (src/memory.rs) computes, for conntrack.capacity, the queues (queues, else
memory.queues), memory.snatAddresses, and the default --frames and --snat-ports. Each queue,
rounded up to MiB: the flow table (the next power of two at or above 1.5 x the capacity
clamped to 16..67108864, slots of 64 bytes), the UMEM (4096 frames of 2048 bytes), the
counters ((4096 services + 65535 backends) x 32 bytes), the control channel (1024 x 176 bytes)
and 2 MiB for the rest of a worker; then the SNAT table (each address: 2 protocols x 64512
ports x 96 bytes) rounded up to MiB; and 27 MiB for the process. tests/chart.rs holds it
equal to xlb::memory.
*/}}
{{- define "xlb.memoryMiB" -}}
{{- $mib := 1048576 -}}
{{- $want := div (mul (max 16 (min (int64 .Values.conntrack.capacity) 67108864)) 3) 2 -}}
{{- $slots := 1 -}}
{{- range until 27 -}}
{{- if lt $slots $want -}}{{- $slots = mul $slots 2 -}}{{- end -}}
{{- end -}}
{{- $perQueue := add (mul $slots 64) (mul 4096 2048) (mul (add 4096 65535) 32) (mul 1024 176) (mul 2 $mib) -}}
{{- $queues := .Values.queues | default .Values.memory.queues -}}
{{- $snat := mul .Values.memory.snatAddresses 2 64512 96 -}}
{{- add (mul $queues (div (add $perQueue $mib -1) $mib)) (div (add $snat $mib -1) $mib) 27 -}}
{{- end -}}

{{/*
The container's resources: .Values.resources, with the memory request (xlb.memoryMiB) and the
limit (the request + memory.headroomMiB) filled in where they are not set. A request set
there leaves the limit to the user too (a computed limit could be below it).
*/}}
{{- define "xlb.resources" -}}
{{- $res := deepCopy .Values.resources -}}
{{- $requests := $res.requests | default dict -}}
{{- $limits := $res.limits | default dict -}}
{{- if not (hasKey $requests "memory") -}}
{{- $request := include "xlb.memoryMiB" . | int64 -}}
{{- $_ := set $requests "memory" (printf "%dMi" $request) -}}
{{- if not (hasKey $limits "memory") -}}
{{- $_ := set $limits "memory" (printf "%dMi" (add $request .Values.memory.headroomMiB)) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $res "requests" $requests -}}
{{- if $limits -}}{{- $_ := set $res "limits" $limits -}}{{- end -}}
{{- toYaml $res -}}
{{- end -}}
