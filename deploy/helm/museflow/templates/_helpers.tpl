{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "museflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release-chart unless the release name already holds the chart name. Role suffixes
(at most 20 characters with a scorer group) are appended, so this is truncated to 42.
*/}}
{{- define "museflow.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 42 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 42 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 42 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "museflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels every resource carries.
*/}}
{{- define "museflow.labels" -}}
helm.sh/chart: {{ include "museflow.chart" . }}
{{ include "museflow.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: museflow
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels of the release (every role's pods and Services carry them).
*/}}
{{- define "museflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "museflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector labels of one role. Call with (dict "root" $ "component" "router").
*/}}
{{- define "museflow.componentSelectorLabels" -}}
{{ include "museflow.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Name of one role's resources. Call with (dict "root" $ "component" "router").
*/}}
{{- define "museflow.componentFullname" -}}
{{- printf "%s-%s" (include "museflow.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "museflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "museflow.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "museflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Consumer group id shared by every worker of the release.
*/}}
{{- define "museflow.appId" -}}
{{- default (include "museflow.fullname" .) .Values.appId }}
{{- end }}

{{/*
Full name of a topic under the configured prefix.  Call with (dict "root" $ "topic" "model.x").
*/}}
{{- define "museflow.topic" -}}
{{- printf "%smuseflow.%s" .root.Values.kafka.topicPrefix .topic }}
{{- end }}

{{/*
Name of the chart-managed models ConfigMap.
*/}}
{{- define "museflow.modelsConfigMapName" -}}
{{- printf "%s-models" (include "museflow.fullname" .) }}
{{- end }}

{{/*
True when models come from the chart-managed ConfigMap.
*/}}
{{- define "museflow.chartManagedModels" -}}
{{- if and (not .Values.models.existingConfigMap) (not .Values.models.existingClaim) }}true{{ end }}
{{- end }}

{{/*
Whether a security protocol uses SASL / TLS.
*/}}
{{- define "museflow.sasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}true{{ end }}
{{- end }}
{{- define "museflow.tls" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}true{{ end }}
{{- end }}

{{/*
MUSEFLOW_* environment of every museflow container. Secrets only by secretKeyRef.
*/}}
{{- define "museflow.env" -}}
- name: MUSEFLOW_BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: MUSEFLOW_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- if include "museflow.sasl" . }}
- name: MUSEFLOW_SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: MUSEFLOW_SASL_USERNAME
  value: {{ required "kafka.sasl.username is required with a SASL_* securityProtocol" .Values.kafka.sasl.username | quote }}
- name: MUSEFLOW_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ required "kafka.sasl.existingSecret is required with a SASL_* securityProtocol" .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- if .Values.kafka.tls.existingSecret }}
{{- if .Values.kafka.tls.caKey }}
- name: MUSEFLOW_SSL_CAFILE
  value: {{ printf "/etc/museflow/kafka-tls/%s" .Values.kafka.tls.caKey | quote }}
{{- end }}
{{- if .Values.kafka.tls.certKey }}
- name: MUSEFLOW_SSL_CERTFILE
  value: {{ printf "/etc/museflow/kafka-tls/%s" .Values.kafka.tls.certKey | quote }}
{{- end }}
{{- if .Values.kafka.tls.keyKey }}
- name: MUSEFLOW_SSL_KEYFILE
  value: {{ printf "/etc/museflow/kafka-tls/%s" .Values.kafka.tls.keyKey | quote }}
{{- end }}
{{- end }}
{{- with .Values.schemaRegistry }}
{{- if .url }}
- name: MUSEFLOW_SCHEMA_REGISTRY_URL
  value: {{ .url | quote }}
{{- end }}
{{- if .username }}
- name: MUSEFLOW_SCHEMA_REGISTRY_USERNAME
  value: {{ .username | quote }}
- name: MUSEFLOW_SCHEMA_REGISTRY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ required "schemaRegistry.existingSecret is required when schemaRegistry.username is set" .existingSecret }}
      key: {{ .passwordKey }}
{{- end }}
{{- end }}
- name: MUSEFLOW_TOPIC_PREFIX
  value: {{ .Values.kafka.topicPrefix | quote }}
- name: MUSEFLOW_PARTITIONS
  value: {{ .Values.kafka.partitions | quote }}
- name: MUSEFLOW_REPLICATION_FACTOR
  value: {{ .Values.kafka.replicationFactor | quote }}
- name: MUSEFLOW_PROCESSING_GUARANTEE
  value: {{ .Values.processingGuarantee | quote }}
- name: MUSEFLOW_APP_ID
  value: {{ include "museflow.appId" . | quote }}
- name: MUSEFLOW_MODEL_DIR
  value: {{ .Values.models.mountPath | quote }}
- name: MUSEFLOW_DATA_DIR
  value: /var/lib/museflow/data
- name: MUSEFLOW_METRICS_PORT
  value: {{ .Values.metrics.port | quote }}
- name: MUSEFLOW_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
{{- range .Values.extraEnv }}
- name: {{ .name }}
  value: {{ .value | quote }}
{{- end }}
{{- end }}

{{/*
Volumes of every museflow pod: models (ConfigMap or claim), Kafka TLS, scratch dirs.
Call with (dict "root" $ "modelsConfigMap" NAME) to override the models ConfigMap name.
*/}}
{{- define "museflow.volumes" -}}
{{- $root := .root }}
- name: models
{{- if $root.Values.models.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ $root.Values.models.existingClaim }}
    readOnly: true
{{- else }}
  configMap:
    name: {{ .modelsConfigMap | default $root.Values.models.existingConfigMap | default (include "museflow.modelsConfigMapName" $root) }}
{{- end }}
{{- if $root.Values.kafka.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ $root.Values.kafka.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
- name: data
  emptyDir:
    sizeLimit: {{ $root.Values.dataDirSizeLimit }}
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: 64Mi
{{- end }}

{{- define "museflow.volumeMounts" -}}
- name: models
  mountPath: {{ .Values.models.mountPath }}
  readOnly: true
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: /etc/museflow/kafka-tls
  readOnly: true
{{- end }}
- name: data
  mountPath: /var/lib/museflow/data
- name: tmp
  mountPath: /tmp
{{- end }}

{{/*
Pod-level settings shared by workers and the topics Job.
*/}}
{{- define "museflow.podCommon" -}}
serviceAccountName: {{ include "museflow.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The worker roles this release runs: a list of dicts with component, roles flag, models and
the role's values. Scorer groups become components "scorer-<group>".
*/}}
{{- define "museflow.components" -}}
{{- $out := list }}
{{- if .Values.router.enabled }}
{{- $out = append $out (dict "component" "router" "role" "router" "models" (list) "values" .Values.router) }}
{{- end }}
{{- range .Values.scorerGroups }}
{{- /* field by field, not sprig merge: merge would turn a group's `enabled: false` or `replicaCount: 0` back into the default */}}
{{- $d := $.Values.scorerDefaults }}
{{- $group := dict "enabled" true "name" .name }}
{{- $_ := set $group "replicaCount" (ternary .replicaCount $d.replicaCount (hasKey . "replicaCount")) }}
{{- $_ = set $group "resources" (ternary .resources $d.resources (hasKey . "resources")) }}
{{- $pdb := deepCopy $d.podDisruptionBudget }}
{{- range $k, $v := (default (dict) .podDisruptionBudget) }}
{{- $_ = set $pdb $k $v }}
{{- end }}
{{- $_ = set $group "podDisruptionBudget" $pdb }}
{{- $out = append $out (dict "component" (printf "scorer-%s" .name) "role" "scorer" "models" (default (list) .models) "values" $group "group" .name) }}
{{- end }}
{{- if .Values.refit.enabled }}
{{- $out = append $out (dict "component" "refit" "role" "refit" "models" (list) "values" .Values.refit) }}
{{- end }}
{{- if .Values.labelJoin.enabled }}
{{- $out = append $out (dict "component" "label-join" "role" "label-join" "models" (list) "values" .Values.labelJoin) }}
{{- end }}
{{- if .Values.lag.enabled }}
{{- $out = append $out (dict "component" "lag" "role" "lag" "models" (list) "values" .Values.lag) }}
{{- end }}
{{- toJson (dict "items" $out) }}
{{- end }}
