{{/* Names, labels and small computed values shared by the templates. */}}

{{- define "bridge-migration.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Every object's name is this or starts with it (the Plugin CR has its own, node.pluginName). */}}
{{- define "bridge-migration.fullname" -}}
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

{{/*
Selector labels of one component: (dict "root" $ "component" "webhook"). The webhook's Service,
PodDisruptionBudget and NetworkPolicy select component=webhook, so nothing else may carry it.
*/}}
{{- define "bridge-migration.componentSelectorLabels" -}}
app.kubernetes.io/name: {{ include "bridge-migration.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component's objects and pods: the chart's own, then commonLabels. */}}
{{- define "bridge-migration.componentLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "bridge-migration.componentSelectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: kubevirt-bridge-migration
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "bridge-migration.selectorLabels" -}}
{{- include "bridge-migration.componentSelectorLabels" (dict "root" . "component" "webhook") -}}
{{- end -}}

{{- define "bridge-migration.labels" -}}
{{- include "bridge-migration.componentLabels" (dict "root" . "component" "webhook") -}}
{{- end -}}

{{/* The node agent's labels: the webhook's selector labels would select the webhook's pods. */}}
{{- define "bridge-migration.nodeAgentSelectorLabels" -}}
{{- include "bridge-migration.componentSelectorLabels" (dict "root" . "component" "node-agent") -}}
{{- end -}}

{{- define "bridge-migration.nodeAgentLabels" -}}
{{- include "bridge-migration.componentLabels" (dict "root" . "component" "node-agent") -}}
{{- end -}}

{{/* The `helm test` objects' labels: their own component, so the Service never selects the test pod. */}}
{{- define "bridge-migration.testLabels" -}}
{{- include "bridge-migration.componentLabels" (dict "root" . "component" "test") -}}
{{- end -}}

{{- define "bridge-migration.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bridge-migration.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
An image reference from (list <image values> <default tag>): `[registry/]repository`, then
`@digest` when a digest is set (the tag is then left out: a digest names one image, a tag can
move), else `:tag`, the tag defaulting to the chart's appVersion.
*/}}
{{- define "bridge-migration.imageRef" -}}
{{- $image := index . 0 -}}
{{- $defaultTag := index . 1 -}}
{{- if $image.registry -}}
{{- printf "%s/%s" (trimSuffix "/" $image.registry) $image.repository -}}
{{- else -}}
{{- $image.repository -}}
{{- end -}}
{{- if $image.digest -}}
{{- printf "@%s" $image.digest -}}
{{- else -}}
{{- printf ":%s" (default $defaultTag $image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "bridge-migration.image" -}}
{{- include "bridge-migration.imageRef" (list .Values.image .Chart.AppVersion) -}}
{{- end -}}

{{- define "bridge-migration.sidecarImage" -}}
{{- include "bridge-migration.imageRef" (list .Values.sidecar.image .Chart.AppVersion) -}}
{{- end -}}

{{/* Secret holding the serving certificate (tls.crt, tls.key, ca.crt). */}}
{{- define "bridge-migration.tlsSecretName" -}}
{{- printf "%s-tls" (include "bridge-migration.fullname" .) -}}
{{- end -}}

{{/* The serving certificate's DNS names: the Service as the API server calls it. */}}
{{- define "bridge-migration.serviceDNS" -}}
{{- printf "%s.%s.svc" (include "bridge-migration.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* The delivery mode the webhook runs with: node.enabled installs the agent, so auto means node. */}}
{{- define "bridge-migration.delivery" -}}
{{- if and .Values.node.enabled (eq .Values.delivery "auto") -}}
node
{{- else -}}
{{- .Values.delivery -}}
{{- end -}}
{{- end -}}

{{- define "bridge-migration.migrationsFailurePolicy" -}}
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
{{- define "bridge-migration.namespaceSelector" -}}
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
