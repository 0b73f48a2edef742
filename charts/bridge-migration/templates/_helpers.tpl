{{/* Names, labels and small computed values shared by the templates. */}}

{{- define "bm.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bm.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "bm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "bm.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "bm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubevirt-bridge-migration
{{- end -}}

{{- define "bm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bm.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "bm.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "bm.sidecarImage" -}}
{{- printf "%s:%s" .Values.sidecar.image.repository (default .Chart.AppVersion .Values.sidecar.image.tag) -}}
{{- end -}}

{{/* Secret holding the serving certificate (tls.crt, tls.key, ca.crt). */}}
{{- define "bm.tlsSecretName" -}}
{{- printf "%s-tls" (include "bm.fullname" .) -}}
{{- end -}}

{{/* The serving certificate's DNS names: the Service as the API server calls it. */}}
{{- define "bm.serviceDNS" -}}
{{- printf "%s.%s.svc" (include "bm.fullname" .) .Release.Namespace -}}
{{- end -}}

{{- define "bm.migrationsFailurePolicy" -}}
{{- if .Values.webhook.failurePolicy.migrations -}}
{{- .Values.webhook.failurePolicy.migrations -}}
{{- else if eq .Values.validation "strict" -}}
Fail
{{- else -}}
Ignore
{{- end -}}
{{- end -}}

{{/*
namespaceSelector shared by every webhook: never kube-system, never our own namespace (the webhook
must not depend on itself), never a namespace labelled <prefix>enabled=false.
*/}}
{{- define "bm.namespaceSelector" -}}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        - kube-system
        - {{ .Release.Namespace }}
        {{- range .Values.webhook.excludeNamespaces }}
        - {{ . }}
        {{- end }}
    - key: {{ printf "%senabled" .Values.annotationPrefix }}
      operator: NotIn
      values: ["false"]
{{- end -}}

{{/* The node agent's labels: the webhook's selector labels would select the webhook's pods. */}}
{{- define "bm.nodeAgentSelectorLabels" -}}
app.kubernetes.io/name: {{ include "bm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node-agent
{{- end -}}

{{- define "bm.nodeAgentLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "bm.nodeAgentSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubevirt-bridge-migration
{{- end -}}
