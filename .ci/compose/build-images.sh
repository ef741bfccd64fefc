#!/usr/bin/env bash
# The compose stack's images without a container registry, built like the worker image
# (runs_app/worker_image/build-offline.sh): Debian packages into a root filesystem, then
# `docker import`. They stand in for what docker-compose.yml builds or pulls:
#
#   fastflow-app:offline       the Dockerfile's application image (web, worker, guard)
#   fastflow-postgres:offline  postgres:15-bookworm (Debian's PostgreSQL 15, same contract:
#                              POSTGRES_USER/PASSWORD(_FILE)/DB, data in /var/lib/postgresql/data)
#   fastflow-redis:offline     redis:7-bookworm, for docker-stack.yml (Debian's Redis 7)
#
#   bash .ci/compose/build-images.sh          (FORCE=1 rebuilds)
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
MIRROR=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
# What the application's code is: its tracked files (a digest tags the image).
CODE_DIGEST=$(git ls-files -s | sha256sum | cut -c1-16)

rootfs() {  # rootfs DIR PACKAGES
  debootstrap --variant=minbase --include="$2" bookworm "$1" "$MIRROR" \
    >"/tmp/fastflow-debootstrap-$(basename "$1").log" 2>&1 \
    || { tail -n 30 "/tmp/fastflow-debootstrap-$(basename "$1").log"; exit 1; }
  rm -rf "$1"/usr/share/{doc,man,info,locale} "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*
}

have_label() {  # have_label IMAGE LABEL VALUE
  [ "$(docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null)" = "$3" ]
}

# --- the application -------------------------------------------------------------------------
if [ "${FORCE:-0}" = 1 ] || ! have_label fastflow-app:offline fastflow.code "$CODE_DIGEST"; then
  ROOT="$(mktemp -d /tmp/fastflow-app-rootfs.XXXXXX)"
  trap 'rm -rf "$ROOT"' EXIT
  rootfs "$ROOT" python3,ca-certificates,git,openssh-client,postgresql-client
  # The dependencies (uv.lock, without the development ones) for Debian's Python 3.11,
  # from the uv cache this machine already has.
  UV="$(command -v uv || python3 -c 'import uv; print(uv.find_uv_bin())')"
  "$UV" export --frozen --no-dev --no-hashes --no-emit-project >"$ROOT/requirements.txt"
  "$UV" pip install --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_36 \
    --target "$ROOT/opt/site" -r "$ROOT/requirements.txt"
  rm "$ROOT/requirements.txt"
  mkdir -p "$ROOT/app"
  git ls-files -z | tar --null -T - -c | tar -C "$ROOT/app" -x
  ln -s /usr/bin/python3 "$ROOT/usr/local/bin/python"
  echo "fastflow:x:1000:1000:Fast-Flow:/home/fastflow:/bin/sh" >>"$ROOT/etc/passwd"
  echo "fastflow:x:1000:" >>"$ROOT/etc/group"
  mkdir -p "$ROOT/home/fastflow" "$ROOT/data" "$ROOT/logs"
  chown 1000:1000 "$ROOT/home/fastflow" "$ROOT/data" "$ROOT/logs"
  tar -C "$ROOT" -c . | docker import \
    -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin PYTHONPATH=/opt/site LANG=C.UTF-8 PYTHONUNBUFFERED=1' \
    -c 'ENV DATA_DIR=/data LOGS_DIR=/logs PIPELINES_DIR=/pipelines STATIC_ROOT=/data/static' \
    -c 'WORKDIR /app' -c 'USER fastflow' -c 'EXPOSE 8000' \
    -c "LABEL fastflow.code=$CODE_DIGEST" \
    -c 'CMD ["python", "manage.py", "up", "--host", "0.0.0.0", "--port", "8000"]' \
    - fastflow-app:offline >/dev/null
  rm -rf "$ROOT"
  trap - EXIT
  echo "built fastflow-app:offline ($CODE_DIGEST)"
fi

# --- PostgreSQL -------------------------------------------------------------------------------
if [ "${FORCE:-0}" = 1 ] || ! have_label fastflow-postgres:offline fastflow.postgres 3; then
  ROOT="$(mktemp -d /tmp/fastflow-pg-rootfs.XXXXXX)"
  trap 'rm -rf "$ROOT"' EXIT
  rootfs "$ROOT" postgresql-15
  install -m 0755 .ci/compose/postgres-entrypoint.sh "$ROOT/usr/local/bin/docker-entrypoint.sh"
  rm -rf "$ROOT/var/lib/postgresql/15"
  mkdir -p "$ROOT/var/lib/postgresql/data" "$ROOT/var/run/postgresql"
  chroot "$ROOT" chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
  tar -C "$ROOT" -c . | docker import \
    -c 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 PGDATA=/var/lib/postgresql/data' \
    -c 'LABEL fastflow.postgres=3' -c 'EXPOSE 5432' \
    -c 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
    - fastflow-postgres:offline >/dev/null
  rm -rf "$ROOT"
  trap - EXIT
  echo "built fastflow-postgres:offline"
fi

# --- Redis (docker-stack.yml's redis: 7-bookworm; Debian bookworm's is 7.0) --------------------
if [ "${FORCE:-0}" = 1 ] || ! have_label fastflow-redis:offline fastflow.redis 1; then
  ROOT="$(mktemp -d /tmp/fastflow-redis-rootfs.XXXXXX)"
  trap 'rm -rf "$ROOT"' EXIT
  rootfs "$ROOT" redis-server
  tar -C "$ROOT" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    -c 'LABEL fastflow.redis=1' -c 'EXPOSE 6379' -c 'USER redis' \
    -c 'CMD ["redis-server", "--protected-mode", "no"]' \
    - fastflow-redis:offline >/dev/null
  rm -rf "$ROOT"
  trap - EXIT
  echo "built fastflow-redis:offline"
fi
