{{/* Chart name, truncated to a DNS label. */}}
{{- define "respawn.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release full name: <release>-respawn, or the release name if it already holds the chart name. */}}
{{- define "respawn.fullname" -}}
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

{{- define "respawn.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "respawn.selectorLabels" -}}
app.kubernetes.io/name: {{ include "respawn.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "respawn.labels" -}}
helm.sh/chart: {{ include "respawn.chart" . }}
app.kubernetes.io/name: {{ include "respawn.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: respawn
{{- end }}

{{/* The operator's image reference: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "respawn.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The pipeline pods' image: config.defaultImage if set, else pipelineImage, whose tag
defaults to image.tag, then appVersion (both images come from one build). */}}
{{- define "respawn.pipelineImage" -}}
{{- if .Values.config.defaultImage }}
{{- .Values.config.defaultImage }}
{{- else if .Values.pipelineImage.digest }}
{{- printf "%s@%s" .Values.pipelineImage.repository .Values.pipelineImage.digest }}
{{- else }}
{{- printf "%s:%s" .Values.pipelineImage.repository (default (default .Chart.AppVersion .Values.image.tag) .Values.pipelineImage.tag) }}
{{- end }}
{{- end }}

{{- define "respawn.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "respawn.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "true" when the operator serves every namespace (no watchNamespaces). */}}
{{- define "respawn.clusterwide" -}}
{{- if not .Values.config.watchNamespaces }}true{{ end }}
{{- end }}

{{/*
Rules the operator needs inside every namespace it serves. Each rule names the code
that needs it; tests/ship/test_rbac.py checks them against respawn_operator's calls.
*/}}
{{- define "respawn.namespacedRules" -}}
# PipelineRuns: kopf lists and watches them; the reconciler GETs the latest copy;
# kopf PATCHes its finalizer and its progress annotations (respawn.dev/*). A fan-out
# parent (spec.foreach) creates, lists, patches (spec) and deletes its child runs.
- apiGroups: ["respawn.dev"]
  resources: ["pipelineruns"]
  verbs: ["get", "list", "watch", "patch", "create", "delete"]
# A fan-out's items may come from a ConfigMap key (spec.foreach.itemsFrom).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
# The reconciler writes phase, attempts and conditions through the status subresource.
- apiGroups: ["respawn.dev"]
  resources: ["pipelineruns/status"]
  verbs: ["patch"]
# Attempt Jobs carry an ownerReference with blockOwnerDeletion: true, which the
# OwnerReferencesPermissionEnforcement admission plugin allows only with this.
- apiGroups: ["respawn.dev"]
  resources: ["pipelineruns/finalizers"]
  verbs: ["update"]
# One Job per attempt (<run>-a<N>) and a cleanup Job on deletion: created, read back
# on AlreadyExists, listed by run uid, watched (kopf); deleted to stop an attempt that has
# no started pod, to force a stop (lost node), and beyond the last config.keptAttempts.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# Attempt pods: watched (kopf) and listed to classify how an attempt ended; patched to
# stop an attempt and keep its pod and log (spec.activeDeadlineSeconds lowered, plus the
# respawn.dev/stopped annotation: suspend, rerun, spec change); deleted when forced
# (lost node), when never started, and on run deletion.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "patch", "delete"]
# Events on PipelineRuns (Preempted, Checkpointed, ...), posted by kopf and the reconciler.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* A runner.namespaces entry's namespace: the entry itself (a string) or its name. */}}
{{- define "respawn.runnerNamespace" -}}
{{- if kindIs "map" . }}{{ .name }}{{ else }}{{ . }}{{ end }}
{{- end }}

{{/* RESPAWN_NAMESPACE_CHECKPOINT_PREFIXES: {namespace: [prefix, ...]} of the runner entries that list some. */}}
{{- define "respawn.namespacePrefixes" -}}
{{- $out := dict }}
{{- range $entry := .Values.runner.namespaces }}
{{- if and (kindIs "map" $entry) $entry.checkpointPrefixes }}
{{- $_ := set $out $entry.name $entry.checkpointPrefixes }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/* The runner namespaces as a list of names. */}}
{{- define "respawn.runnerNamespaceNames" -}}
{{- $names := list }}
{{- range $entry := .Values.runner.namespaces }}
{{- $names = append $names (include "respawn.runnerNamespace" $entry) }}
{{- end }}
{{- toJson $names }}
{{- end }}
