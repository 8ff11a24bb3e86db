#!/usr/bin/env bash
# Build a minimal Debian + Python 3 OCI image with buildah, without Docker Hub or a daemon.
#
#   scripts/base_image.sh [IMAGE]      (default: localhost/tagserve-python:3.11-bookworm)
#
# debootstrap makes the root file system from a Debian mirror (MIRROR, default: the one apt uses here),
# the host's extra CA certificates go in (so a TLS-inspecting proxy keeps working for pip in
# the bento build), and buildah commits it as an image. An existing image is reused.
set -euo pipefail
IMAGE=${1:-localhost/tagserve-python:3.11-bookworm}
SUITE=${SUITE:-bookworm}
# The Debian mirror this machine's apt uses (deb822 or one-line sources), else Debian's.
detected=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$detected" ] || detected=$(awk '$1 == "deb" && $3 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
MIRROR=${MIRROR:-${detected:-http://deb.debian.org/debian}}
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot} STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
# Package scripts run inside the new root (debootstrap, chroot) and would create their temporary
# files under the caller's TMPDIR, which does not exist there (the container test sets one).
unset TMPDIR

if buildah inspect --type image "$IMAGE" >/dev/null 2>&1; then
  echo "base image $IMAGE exists: reusing it"
  exit 0
fi

rootfs=$(mktemp -d /var/tmp/tagserve-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap $SUITE from $MIRROR (a few minutes)..."
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  "$SUITE" "$rootfs" "$MIRROR" >/dev/null
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates >/dev/null
fi
# BentoML's Dockerfile calls `python`; Debian only ships `python3`.
ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

container=$(buildah from scratch)
mount=$(buildah mount "$container")
cp -a "$rootfs"/. "$mount"/
buildah unmount "$container" >/dev/null
# uv (which BentoML's Dockerfile installs with pip unless present) must trust the system CA
# store, host CAs included, rather than its own bundled roots.
buildah config --env LANG=C.UTF-8 --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt --env UV_NATIVE_TLS=true \
  --env PIP_BREAK_SYSTEM_PACKAGES=1 --cmd /bin/bash "$container"
buildah run "$container" -- python3 -m pip install --quiet --no-cache-dir uv
buildah commit --quiet "$container" "$IMAGE" >/dev/null
buildah rm "$container" >/dev/null
echo "base image $IMAGE built"
