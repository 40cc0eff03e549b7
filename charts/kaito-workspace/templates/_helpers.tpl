{{/* Names and labels shared by every template of kaito-workspace. */}}

{{- define "kaito-workspace.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kaito-workspace.fullname" -}}
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

{{- define "kaito-workspace.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kaito-workspace.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kaito-workspace.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "kaito-workspace.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kaito-workspace.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kaito-workspace.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Service the API server reaches the webhook through, and its DNS name. */}}
{{- define "kaito-workspace.webhookService" -}}
{{- printf "%s-webhook" (include "kaito-workspace.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kaito-workspace.webhookHost" -}}
{{- printf "%s.%s.svc" (include "kaito-workspace.webhookService" .) .Release.Namespace }}
{{- end }}

{{/* The ValidatingWebhookConfiguration (cluster-scoped, so the namespace is in the name). */}}
{{- define "kaito-workspace.webhookConfig" -}}
{{- printf "%s-%s" (include "kaito-workspace.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kaito-workspace.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "kaito-workspace.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kaito-workspace.issuer" -}}
{{- printf "%s-selfsigned" (include "kaito-workspace.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The operator image: `<repository>@<digest>` when image.digest is set (the digest decides
what runs, whatever the tag), otherwise `<repository>:<tag or appVersion>`. */}}
{{- define "kaito-workspace.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The NVIDIA device plugin image, `@<imageDigest>` appended when one is set. */}}
{{- define "kaito-workspace.devicePluginImage" -}}
{{- with .Values.nvidiaDevicePlugin }}
{{- if .imageDigest }}
{{- printf "%s@%s" .image .imageDigest }}
{{- else }}
{{- .image }}
{{- end }}
{{- end }}
{{- end }}
