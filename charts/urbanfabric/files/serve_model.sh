# Start services.modelserver for one model version inside a KServe predictor pod.
# KServe's storage initializer downloads storageUri (s3://<bucket>/models/<model_dir>/<version>/)
# into /mnt/models; the model server reads a repository laid out as <repo>/<model_dir>/<version>/,
# so link the download into such a repository (on the writable /tmp) and serve from it.
# A canary revision (UF_ISVC_SERVE_AS) also answers under the name of the version it may replace.
set -eu
storage="${UF_ISVC_STORAGE:-/mnt/models}"
repo="${TMPDIR:-/tmp}/model-repository"
dir=$(printf '%s' "$UF_ISVC_MODEL" | tr '-' '_')
mkdir -p "$repo/$dir"
ln -sfn "$storage" "$repo/$dir/$UF_ISVC_VERSION"
exec python -m services.modelserver \
  --host "${UF_ISVC_HOST:-0.0.0.0}" \
  --http-port "${UF_ISVC_HTTP_PORT:-8080}" \
  --grpc-port "${UF_ISVC_GRPC_PORT:-8081}" \
  --model-dir "$repo" \
  --models "$UF_ISVC_MODEL:$UF_ISVC_VERSION" \
  ${UF_ISVC_SERVE_AS:+--serve-as "$UF_ISVC_SERVE_AS"} \
  --device "$UF_ISVC_DEVICE" \
  --require-all
