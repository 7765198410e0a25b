{{/* Names and labels shared by the templates. */}}

{{- define "clip-retrieval.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "clip-retrieval.operatorName" -}}
{{- printf "%s-operator" (include "clip-retrieval.fullname" .) -}}
{{- end -}}

{{- define "clip-retrieval.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "clip-retrieval.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "clip-retrieval.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/part-of: clip-retrieval
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "clip-retrieval.selectorLabels" -}}
app.kubernetes.io/name: clip-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
