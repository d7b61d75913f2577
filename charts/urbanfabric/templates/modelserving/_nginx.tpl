{{/* nginx.conf of the model gateway (templates/modelserving/gateway.yaml). */}}
{{- define "urbanfabric.nginxConf" -}}
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
  client_body_temp_path /tmp/client_temp;
  proxy_temp_path /tmp/proxy_temp;
  fastcgi_temp_path /tmp/fastcgi_temp;
  uwsgi_temp_path /tmp/uwsgi_temp;
  scgi_temp_path /tmp/scgi_temp;
  access_log off;
  # Tiles travel as raw FP32 tensors (a 16-tile batch is ~50 MB).
  client_max_body_size 256m;
  proxy_request_buffering off;
  proxy_read_timeout 300s;
  proxy_send_timeout 300s;
  proxy_http_version 1.1;
  # Resolve predictors per request: they may be created after the gateway starts.
  resolver {{ .Values.modelServing.dnsResolver }} valid=30s ipv6=off;
  server {
    listen {{ .Values.modelServing.gateway.port }};
    default_type application/json;
    location = /healthz { return 200 '{"status":"ok"}'; }
    {{- range $key, $isvc := .Values.inferenceServices }}
    {{- if $isvc.enabled }}
    {{- $host := include "urbanfabric.predictorHost" (list $ $key) }}
    location ~ ^/v2/models/{{ $isvc.model }}-{{ $isvc.version }}(/|$) {
      set $upstream_host {{ $host }};
      proxy_set_header Host $upstream_host;
      proxy_pass http://$upstream_host:{{ $.Values.modelServing.predictorPort }};
    }
    {{- end }}
    {{- end }}
    location / { return 404 '{"error":"no model behind this path on the urbanfabric model gateway"}'; }
  }
}
{{- end }}
