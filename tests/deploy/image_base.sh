#!/usr/bin/env bash
# A local base image for building the project's images without a registry: Debian bookworm
# (debootstrap from deb.debian.org) committed into buildah's storage as $BASE (no Python: the
# Dockerfile installs it from apt on any non-python base, as for the CUDA base). Docker Hub
# (python:3.11.13-slim-bookworm) is unreachable where the tests run; the Debian mirror is not.
# Needs root, buildah and debootstrap (apt-get install -y buildah debootstrap). Idempotent.
set -euo pipefail
BASE=${BASE:-localhost/urbanfabric-base:bookworm}
STORAGE=(--storage-driver "${BUILDAH_STORAGE_DRIVER:-vfs}")
if buildah "${STORAGE[@]}" inspect --type image "$BASE" >/dev/null 2>&1; then
  echo "$BASE is there"; exit 0
fi
root=$(mktemp -d /tmp/uf-base.XXXXXX)
ctr=""
trap 'rm -rf "$root"; [ -z "$ctr" ] || buildah "${STORAGE[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/dev/null
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
# This machine's own extra CAs (a TLS-inspecting egress proxy, where there is one): the
# Dockerfile's apt-get installs ca-certificates, which then trusts them, so pip reaches PyPI.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$root"/usr/local/share/ca-certificates
  cp /usr/local/share/ca-certificates/*.crt "$root"/usr/local/share/ca-certificates/
fi
ctr=$(buildah "${STORAGE[@]}" from scratch)
mnt=$(buildah "${STORAGE[@]}" mount "$ctr")
cp -a "$root"/. "$mnt"/
buildah "${STORAGE[@]}" umount "$ctr" >/dev/null
buildah "${STORAGE[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/bash "$ctr"
buildah "${STORAGE[@]}" commit --rm "$ctr" "$BASE" >/dev/null
ctr=""
echo "$BASE built"
