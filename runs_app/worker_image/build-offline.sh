#!/usr/bin/env bash
# Build the worker image from Debian packages, for machines without a container registry.
# The result matches the Dockerfile beside this script: python3 and uv on PATH, a non-root
# user `fastflow` (uid 10001, never the orchestrator's own) with HOME /home/fastflow,
# nothing else assumed, and the label fastflow.worker-image-version that Fast-Flow checks.
#
#   bash runs_app/worker_image/build-offline.sh [IMAGE]     (default: $WORKER_IMAGE or fastflow-worker:latest)
#   FORCE=1 bash ...                                        (rebuild even if the image is current)
#   SUITE=trixie bash ... fastflow-worker:py3.13            (the newer-Python image: Debian trixie's
#                                                            Python 3.13, for PYTHON_IMAGES)
set -euo pipefail

SUITE="${SUITE:-bookworm}"
IMAGE="${1:-${WORKER_IMAGE:-fastflow-worker:latest}}"
# Keep in step with IMAGE_VERSION in runs_app/executors/layout.py and the Dockerfile.
VERSION=2
have=$(docker image inspect --format '{{ index .Config.Labels "fastflow.worker-image-version" }}' "$IMAGE" 2>/dev/null || true)
if [ "${FORCE:-0}" != 1 ] && [ "$have" = "$VERSION" ]; then
  echo "worker image $IMAGE (version $VERSION) already exists (FORCE=1 rebuilds it)"
  exit 0
fi

command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }

# The machine's own Debian mirror (no internet beyond the package registries).
MIRROR=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$MIRROR" ] && [ -f /etc/apt/sources.list ]; then
  MIRROR=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)
fi
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

# The real uv binary (a `uv` on PATH may be a shim script): the PyPI wheel carries it.
UV_BIN="$(python3 -c 'import uv; print(uv.find_uv_bin())' 2>/dev/null || command -v uv)"
head -c 4 "$UV_BIN" | grep -q ELF || { echo "$UV_BIN is not the uv binary; pip install uv" >&2; exit 1; }

ROOTFS="$(mktemp -d /tmp/fastflow-rootfs.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT

echo "debootstrap $SUITE from $MIRROR into $ROOTFS"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$SUITE" "$ROOTFS" "$MIRROR" >/tmp/fastflow-debootstrap.log 2>&1 \
  || { tail -n 30 /tmp/fastflow-debootstrap.log; exit 1; }

install -m 0755 "$UV_BIN" "$ROOTFS/usr/local/bin/uv"
echo "fastflow:x:10001:10001:Fast-Flow run:/home/fastflow:/bin/sh" >>"$ROOTFS/etc/passwd"
echo "fastflow:x:10001:" >>"$ROOTFS/etc/group"
echo "fastflow:*:19000:0:99999:7:::" >>"$ROOTFS/etc/shadow"
mkdir -p "$ROOTFS/home/fastflow" "$ROOTFS/fastflow" "$ROOTFS/uv-cache" "$ROOTFS/opt/fastflow"
chown 10001:10001 "$ROOTFS/home/fastflow"
# Smaller image: documentation, locales and apt's caches are not needed to run pipelines.
rm -rf "$ROOTFS"/usr/share/{doc,man,info,locale} "$ROOTFS"/var/cache/apt/* "$ROOTFS"/var/lib/apt/lists/*
# Which Python the image holds ("3.13"): PYTHON_IMAGES maps a pipeline's python_version to it.
PY_VERSION=$(chroot "$ROOTFS" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')

tar -C "$ROOTFS" -c . | docker import \
  -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 PYTHONUNBUFFERED=1' \
  -c 'USER fastflow' \
  -c "LABEL fastflow.worker-image-version=$VERSION" \
  -c "LABEL fastflow.python-version=$PY_VERSION" \
  -c 'WORKDIR /home/fastflow' \
  - "$IMAGE" >/dev/null
docker run --rm "$IMAGE" sh -c 'python3 --version && uv --version && id'
echo "built $IMAGE"
