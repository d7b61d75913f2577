{{/*
Pieces shared by the quick-start bundle (bundle.kafka, bundle.minio, bundle.prefect): single-
replica Deployments with a PersistentVolumeClaim each, in the release's namespace. Plain
templates, not chart dependencies: `helm dependency build` needs the internet.
*/}}

{{/* The bundle component's PVC (kept on uninstall: it holds data). Call with (list $ "kafka"). */}}
{{- define "urbanfabric.bundleClaim" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $cfg := index $root.Values.bundle $name -}}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ include "urbanfabric.name" (list $root $name) }}
  labels:
    {{- include "urbanfabric.labels" (list $root $name) | nindent 4 }}
  annotations:
    helm.sh/resource-policy: keep
spec:
  accessModes: [ReadWriteOnce]
  {{- with $cfg.storageClass }}
  storageClassName: {{ . }}
  {{- end }}
  resources:
    requests:
      storage: {{ $cfg.storage }}
{{- end -}}

{{/* Service, ServiceAccount and NetworkPolicy (ingress from the release's pods only) of a
bundle component. Call with (list $ "kafka" (list port...)), each port a dict name/port. */}}
{{- define "urbanfabric.bundleAccess" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $ports := index . 2 -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "urbanfabric.name" (list $root $name) }}
  labels:
    {{- include "urbanfabric.labels" (list $root $name) | nindent 4 }}
spec:
  selector:
    {{- include "urbanfabric.selectorLabels" (list $root $name) | nindent 4 }}
  ports:
    {{- range $ports }}
    - name: {{ .name }}
      port: {{ .port }}
      targetPort: {{ .name }}
      protocol: TCP
    {{- end }}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "urbanfabric.name" (list $root $name) }}
  labels:
    {{- include "urbanfabric.labels" (list $root $name) | nindent 4 }}
automountServiceAccountToken: false
{{- if $root.Values.networkPolicy.enabled }}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "urbanfabric.name" (list $root $name) }}
  labels:
    {{- include "urbanfabric.labels" (list $root $name) | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "urbanfabric.selectorLabels" (list $root $name) | nindent 6 }}
  policyTypes: [Ingress]
  ingress:
    - from:
        - podSelector:
            matchLabels:
              app.kubernetes.io/instance: {{ $root.Release.Name }}
{{- end }}
{{- end -}}
