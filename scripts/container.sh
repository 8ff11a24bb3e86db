#!/usr/bin/env bash
# Build the OCI image of a bento with buildah (no Docker daemon, no Docker Hub), run it and
# call it.
#
#   scripts/container.sh [BENTO_TAG]     (default: the newest tagserve bento in the store)
#
# 1. installs buildah and debootstrap with apt when they are missing (needs root);
# 2. builds the local Python base image the bento's Dockerfile starts FROM
#    (scripts/base_image.sh; reused when it exists);
# 3. `bentoml containerize --backend buildah` (chroot isolation, vfs storage);
# 4. runs the image with `buildah run` on 127.0.0.1:$PORT, POSTs the model's own input
#    example to /predict and prints the answer; the server (every process it started, by
#    id) and the container are removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot} STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
PYTHON=${PYTHON:-.venv/bin/python}
BENTOML=${BENTOML:-.venv/bin/bentoml}
PORT=${PORT:-3900}
LOGS=${TMPDIR:-/tmp}

missing=()
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if ((${#missing[@]})); then
  [ "$(id -u)" = 0 ] || { echo "error: ${missing[*]} missing: apt-get install ${missing[*]} (as root)" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

tag=${1:-$("$PYTHON" -m release latest)}
# COLUMNS: BentoML prints through rich, which wraps a long path at the terminal's width.
bento_path=$(COLUMNS=100000 "$BENTOML" get "$tag" -o path 2>/dev/null) || { echo "error: no bento $tag in the store (BENTOML_HOME=${BENTOML_HOME:-~/bentoml})" >&2; exit 1; }
# The base image is fixed when the bento is built (docker.base_image in bentofile.yaml, or
# `python -m release build --base-image`): read it from the bento's own Dockerfile.
base_image=$(awk '/^FROM /{print $2; exit}' "$bento_path/env/docker/Dockerfile")
case "$base_image" in
  localhost/*) scripts/base_image.sh "$base_image" ;;
  *) echo "base image $base_image: pulled by buildah" ;;
esac

image="tagserve:${tag#*:}"
echo "containerize $tag -> localhost/$image"
log="$LOGS/tagserve-containerize.log"
"$BENTOML" containerize "$tag" --backend buildah --image-tag "$image" >"$log" 2>&1 \
  || { tail -n 20 "$log" >&2; echo "error: bentoml containerize failed (log: $log)" >&2; exit 1; }

container=$(buildah from "localhost/$image")
server=""
descendants() {  # the processes started under PID, recursively (by parent id)
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}
alive() {  # any of these processes still running?
  local pid
  for pid in "$@"; do kill -0 "$pid" 2>/dev/null && return 0; done
  return 1
}
cleanup() {
  if [ -n "$server" ]; then
    # BentoML's workers run in sessions of their own: collected by parent id before the
    # server stops, then stopped by their ids.
    local pids
    pids="$server $(descendants "$server" | tr '\n' ' ')"
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 1 20); do alive $pids || break; sleep 0.5; done
    kill -KILL $pids 2>/dev/null || true
  fi
  buildah rm "$container" >/dev/null 2>&1 || true
}
trap cleanup EXIT
run_log="$LOGS/tagserve-container.log"
buildah run --user bentoml "$container" -- \
  /home/bentoml/bento/env/docker/entrypoint.sh bentoml serve --host 127.0.0.1 --port "$PORT" \
  >"$run_log" 2>&1 &
server=$!
for _ in $(seq 1 180); do
  curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || break
  sleep 1
done
curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null \
  || { tail -n 20 "$run_log" >&2; echo "error: the container did not become ready (log: $run_log)" >&2; exit 1; }
payload=$("$PYTHON" -m release example-request "$tag")
echo "POST /predict $payload"
answer=$(curl -fsS -X POST "http://127.0.0.1:$PORT/predict" -H 'content-type: application/json' -d "$payload")
echo "-> $answer"
meta=$(curl -fsS "http://127.0.0.1:$PORT/metadata")
"$PYTHON" -c 'import json, sys; m = json.loads(sys.argv[1]); print("metadata: model {model}, bento {bento}, git tag {git_tag!r}, commit {git_commit:.12}".format(**m))' "$meta"
echo "image localhost/$image answers /predict"
