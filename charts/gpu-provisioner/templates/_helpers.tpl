{{/* Names and labels shared by every template of gpu-provisioner. */}}

{{- define "gpu-provisioner.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gpu-provisioner.fullname" -}}
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

{{- define "gpu-provisioner.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpu-provisioner.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gpu-provisioner.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "gpu-provisioner.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "gpu-provisioner.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gpu-provisioner.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image: `<repository>@<digest>` when image.digest is set (the digest decides
what runs, whatever the tag), otherwise `<repository>:<tag or appVersion>`. */}}
{{- define "gpu-provisioner.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* "true" when this release installs (or keeps managing) the NodeClaim CRD: the value
crds.nodeClaim.install is on and the CRD is absent or was installed by this very release.
A CRD that Karpenter (or another release) installed is left alone; `lookup` sees the cluster
at install/upgrade time (`helm template` sees none, so it renders the CRD). */}}
{{- define "gpu-provisioner.installNodeClaimCRD" -}}
{{- if .Values.crds.nodeClaim.install }}
{{- $existing := lookup "apiextensions.k8s.io/v1" "CustomResourceDefinition" "" "nodeclaims.karpenter.sh" }}
{{- if not $existing }}true
{{- else }}
{{- $annotations := dig "metadata" "annotations" (dict) $existing }}
{{- if and (eq (get $annotations "meta.helm.sh/release-name") .Release.Name) (eq (get $annotations "meta.helm.sh/release-namespace") .Release.Namespace) }}true{{- end }}
{{- end }}
{{- end }}
{{- end }}
