{{/* Names, labels, images and the shared pod pieces of every component. */}}

{{- define "urbanfabric.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Object name of a component: <fullname>-<component>. Call with (list $ "component"). */}}
{{- define "urbanfabric.name" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "urbanfabric.fullname" $root) (index . 1) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "urbanfabric.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ $root.Chart.Name }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "urbanfabric.labels" -}}
{{- $root := index . 0 -}}
{{ include "urbanfabric.selectorLabels" . }}
app.kubernetes.io/part-of: urbanfabric
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" }}
urbanfabric.io/profile: {{ $root.Values.profile }}
{{- end -}}

{{/*
Image reference of a project image. Call with (list $ "acquisition"). An images.<name> value
that already names a tag or digest (skaffold sets repository:tag@digest) is used as it is;
otherwise image.registry and image.tag (default: appVersion) complete it, and
image.digests.<name> (written by the release workflow) pins it: repository:tag@sha256:….
*/}}
{{- define "urbanfabric.image" -}}
{{- $root := index . 0 -}}
{{- $repo := index $root.Values.images (index . 1) -}}
{{- $last := $repo | splitList "/" | last -}}
{{- if or (contains "@" $repo) (contains ":" $last) -}}
{{- $repo -}}
{{- else -}}
{{- $tag := $root.Values.image.tag | default $root.Chart.AppVersion -}}
{{- $ref := $repo -}}
{{- if $root.Values.image.registry -}}
{{- $ref = printf "%s/%s" (trimSuffix "/" $root.Values.image.registry) $repo -}}
{{- end -}}
{{- $digest := index ($root.Values.image.digests | default dict) (index . 1) | default "" -}}
{{- if hasPrefix "sha256:" $tag -}}
{{- printf "%s@%s" $ref $tag -}}
{{- else if $digest -}}
{{- printf "%s:%s@%s" $ref $tag $digest -}}
{{- else -}}
{{- printf "%s:%s" $ref $tag -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Who calls whom over gRPC: service -> calling components (the Kafka workers and the flow
runner, as in services/workers/*.py and flows/map_area.py). NetworkPolicies admit exactly
these; tests/deploy checks the list against the code.
*/}}
{{- define "urbanfabric.callers" -}}
acquisition: [tile-worker, flows]
calibration: [tile-worker]
segmentation: [tile-worker]
materials: [building-worker]
attributes: [building-worker]
intensity: [building-worker]
modelgateway: [segmentation, materials, flows]
{{- end -}}

{{/* gRPC address of a service inside the cluster. Call with (list $ "acquisition"). */}}
{{- define "urbanfabric.serviceAddr" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $svc := index $root.Values.services $name -}}
{{- printf "%s.%s.svc.%s:%d" (include "urbanfabric.name" (list $root $name)) $root.Release.Namespace $root.Values.modelServing.clusterDomain (int $svc.port) -}}
{{- end -}}

{{/* The model gateway's base URL (every model's V2 REST endpoint). */}}
{{- define "urbanfabric.gatewayUrl" -}}
{{- printf "http://%s.%s.svc.%s:%d" (include "urbanfabric.name" (list . "model-gateway")) .Release.Namespace .Values.modelServing.clusterDomain (int .Values.modelServing.gateway.port) -}}
{{- end -}}

{{/* Environment of every project container: ConfigMap + S3 keys from the existing Secret. */}}
{{- define "urbanfabric.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "urbanfabric.name" (list . "config") }}
env:
  - name: URBANFABRIC_S3_ACCESS_KEY
    valueFrom:
      secretKeyRef:
        name: {{ .Values.objectStore.credentialsSecret.name }}
        key: {{ .Values.objectStore.credentialsSecret.accessKeyKey }}
  - name: URBANFABRIC_S3_SECRET_KEY
    valueFrom:
      secretKeyRef:
        name: {{ .Values.objectStore.credentialsSecret.name }}
        key: {{ .Values.objectStore.credentialsSecret.secretKeyKey }}
{{- include "urbanfabric.securityEnv" . }}
{{- end -}}

{{/* The service-token key from its Secret: every project process, and the TorchServe predictors,
whose handler checks each request's token (services/torchserve/handler.py). */}}
{{- define "urbanfabric.serviceTokenEnv" -}}
- name: URBANFABRIC_SERVICE_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.security.serviceTokenSecret.name }}
      key: {{ .Values.security.serviceTokenSecret.key }}
{{- end -}}

{{/* Credentials between the project's own processes (also in the model server's pods). */}}
{{- define "urbanfabric.securityEnv" }}
{{- include "urbanfabric.serviceTokenEnv" . | nindent 2 }}
  {{- if .Values.security.grpcReflection }}
  - name: URBANFABRIC_GRPC_REFLECTION
    value: "1"
  {{- end }}
  {{- include "urbanfabric.kafkaSaslEnv" . }}
  {{- if .Values.prefect.authStringSecret.name }}
  - name: PREFECT_API_AUTH_STRING
    valueFrom:
      secretKeyRef:
        name: {{ .Values.prefect.authStringSecret.name }}
        key: {{ .Values.prefect.authStringSecret.key }}
  {{- end }}
{{- end -}}

{{- define "urbanfabric.podSecurity" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Spread a component's pods over nodes and zones. Call with (list $ "component"). */}}
{{- define "urbanfabric.topologySpread" -}}
{{- $root := index . 0 -}}
{{- if $root.Values.topologySpread.enabled -}}
topologySpreadConstraints:
  {{- range $key := list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
  - maxSkew: {{ $root.Values.topologySpread.maxSkew }}
    topologyKey: {{ $key }}
    whenUnsatisfiable: {{ $root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "urbanfabric.selectorLabels" $ | nindent 8 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* Writable scratch space: the root filesystem is read-only. */}}
{{- define "urbanfabric.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 2Gi
{{- end -}}
{{- define "urbanfabric.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* Device and GPU count of an InferenceService entry, profile defaults applied. */}}
{{- define "urbanfabric.isvcDevice" -}}
{{- $root := index . 0 -}}
{{- $isvc := index . 1 -}}
{{- $profile := index $root.Values.profiles $root.Values.profile | default dict -}}
{{- if kindIs "invalid" $isvc.device -}}{{ $profile.device }}{{- else -}}{{ $isvc.device }}{{- end -}}
{{- end -}}
{{- define "urbanfabric.isvcGpus" -}}
{{- $root := index . 0 -}}
{{- $isvc := index . 1 -}}
{{- $profile := index $root.Values.profiles $root.Values.profile | default dict -}}
{{- if kindIs "invalid" $isvc.gpus -}}{{ int $profile.gpus }}{{- else -}}{{ int $isvc.gpus }}{{- end -}}
{{- end -}}

{{/* Directory of a model inside the model repository: footprint-unet -> footprint_unet. */}}
{{- define "urbanfabric.modelDir" -}}
{{- replace "-" "_" . -}}
{{- end -}}

{{/* Host of an InferenceService's predictor as the gateway reaches it. (list $ key) */}}
{{- define "urbanfabric.predictorHost" -}}
{{- $root := index . 0 -}}
{{- $name := include "urbanfabric.name" (list $root (index . 1)) -}}
{{- if eq $root.Values.modelServing.deploymentMode "RawDeployment" -}}
{{- printf "%s-predictor.%s.svc.%s" $name $root.Release.Namespace $root.Values.modelServing.clusterDomain -}}
{{- else -}}
{{- printf "%s.%s.svc.%s" $name $root.Release.Namespace $root.Values.modelServing.clusterDomain -}}
{{- end -}}
{{- end -}}

{{/*
Endpoints of the prerequisites: the bundled one inside the release when bundle.<name>.enabled
(templates/bundle/), else the external endpoint the values name.
*/}}
{{- define "urbanfabric.kafkaBootstrap" -}}
{{- if .Values.bundle.kafka.enabled -}}
{{- printf "%s.%s.svc.%s:9092" (include "urbanfabric.name" (list . "kafka")) .Release.Namespace .Values.modelServing.clusterDomain -}}
{{- else -}}
{{- .Values.kafka.bootstrapServers -}}
{{- end -}}
{{- end -}}
{{- define "urbanfabric.s3Endpoint" -}}
{{- if .Values.bundle.minio.enabled -}}
{{- printf "%s.%s.svc.%s:9000" (include "urbanfabric.name" (list . "minio")) .Release.Namespace .Values.modelServing.clusterDomain -}}
{{- else -}}
{{- .Values.objectStore.endpoint -}}
{{- end -}}
{{- end -}}
{{- define "urbanfabric.prefectApiUrl" -}}
{{- if .Values.bundle.prefect.enabled -}}
{{- printf "http://%s.%s.svc.%s:4200/api" (include "urbanfabric.name" (list . "prefect")) .Release.Namespace .Values.modelServing.clusterDomain -}}
{{- else -}}
{{- .Values.prefect.apiUrl -}}
{{- end -}}
{{- end -}}

{{/* Kafka SASL credentials from an existing Secret (nothing when kafka.sasl.existingSecret is ""). */}}
{{- define "urbanfabric.kafkaSaslEnv" }}
  {{- with .Values.kafka.sasl }}
  {{- if .existingSecret }}
  - name: URBANFABRIC_KAFKA_MECHANISM
    value: {{ .mechanism | quote }}
  - name: URBANFABRIC_KAFKA_USERNAME
    valueFrom:
      secretKeyRef:
        name: {{ .existingSecret }}
        key: {{ .usernameKey }}
  - name: URBANFABRIC_KAFKA_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ .existingSecret }}
        key: {{ .passwordKey }}
  {{- end }}
  {{- end }}
{{- end -}}
