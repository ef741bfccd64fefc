#!/bin/sh
# Builds a run's Python environment and starts the launcher in it (POSIX sh, no bash).
#
#   prepare.sh ENTRY_POINT          in the pipeline folder
#
# FASTFLOW_ENV_DIR       where the run's own environment is made (writable, the run's)
# FASTFLOW_REQUIREMENTS  requirements file to install, or empty
# FASTFLOW_PYTHON        Python version to use, or empty (the image's python3)
# FASTFLOW_LAUNCHER      the launcher (runs_app/in_run/launcher.py), beside the other tools
# FASTFLOW_WARM_ONLY     1: only install (the warm-up fills the shared uv cache), no code
# FASTFLOW_EXTRAS, FASTFLOW_GROUPS   a warm-up of a uv project: its extras and groups
# FASTFLOW_NETRC         a warm-up: credentials of private package indexes (a netrc file)
# FASTFLOW_INDEX_OPTIONS a warm-up: the index lines of its requirements, kept in its lock
# FASTFLOW_LOCK          a run: the lock its warm-up made ("name==version" lines); a
#                        warm-up: a lock another node made, installed into this node's cache
# FASTFLOW_CACHE_FALLBACK 1: a run whose packages are not all in the node's cache downloads
#                        exactly its lock into its own (the swarm executor)
#
# FASTFLOW_REQUIREMENTS names where the environment comes from (pipelines_app/
# environments.py): uv.lock (installed as locked: exported, development groups left out),
# pyproject.toml (its dependencies, resolved), main.py (its inline script metadata) or a
# requirements file.
#
# A warm-up resolves the requirements (online, writing the shared cache), writes the lock
# (environment_lock.py: what got installed, and the wheels uv built from source kept in the
# cache's wheelhouse), and then installs that lock once exactly as a run will: offline.
#
# A run installs exactly its lock, never resolving again: each pinned distribution linked
# from the shared cache, which is read-only (UV_LINK_MODE=symlink, UV_OFFLINE), wheels built
# from source found in the wheelhouse. Nothing is downloaded or changed in the cache.
set -e
# A lock's relative --find-links name folders of the pipeline (the working directory); the
# lock file itself is written elsewhere, so they are made absolute where it is used.
resolve_links() {
    while IFS= read -r line; do
        case "$line" in
        "--find-links "/* | "--find-links "*://*) printf '%s\n' "$line" ;;
        "--find-links "*) printf '%s %s/%s\n' "--find-links" "$PWD" "${line#--find-links }" ;;
        *) printf '%s\n' "$line" ;;
        esac
    done
}
# The uv marker (fastflow_markers.py), spelled here: this is sh. FASTFLOW_UV_VERSION: the
# executor read it once for this image (the sandbox), saving a start of uv in every run.
printf '\036fastflow:uv %s\n' "${FASTFLOW_UV_VERSION:-$(uv --version)}" >&2
python=python3
tools="$(dirname "$FASTFLOW_LAUNCHER")"
wheelhouse="$UV_CACHE_DIR/fastflow-wheels-v1"
if [ -n "$FASTFLOW_REQUIREMENTS" ] || [ -n "$FASTFLOW_PYTHON" ]; then
    uv venv --quiet --no-project --python "${FASTFLOW_PYTHON:-python3}" "$FASTFLOW_ENV_DIR"
    lock="$FASTFLOW_ENV_DIR/fastflow.lock"
    if [ "$FASTFLOW_WARM_ONLY" = 1 ]; then
        if [ -n "$FASTFLOW_NETRC" ]; then
            # Beside the environment (the warm-up's own folder), never in a HOME.
            umask 077
            printf '%s\n' "$FASTFLOW_NETRC" >"$FASTFLOW_ENV_DIR.netrc"
            umask 022
            NETRC="$FASTFLOW_ENV_DIR.netrc"
            export NETRC
        fi
        unset FASTFLOW_NETRC
        selection=""
        for extra in $FASTFLOW_EXTRAS; do selection="$selection --extra $extra"; done
        for group in $FASTFLOW_GROUPS; do selection="$selection --group $group"; done
        if [ -n "$FASTFLOW_LOCK" ]; then
            # Another node resolved it: exactly its pins, downloaded into this node's cache.
            mkdir -p "$wheelhouse"
            printf '%s\n' "$FASTFLOW_LOCK" | resolve_links >"$lock.wanted"
            uv pip install --python "$FASTFLOW_ENV_DIR" --no-deps \
                --find-links "$wheelhouse" --requirements "$lock.wanted"
        else
        case "$FASTFLOW_REQUIREMENTS" in
        uv.lock)
            uv lock --check
            exported="$FASTFLOW_ENV_DIR.requirements.txt"
            # shellcheck disable=SC2086 (the words of $selection are options)
            uv export --quiet --frozen --no-dev --no-emit-project $selection \
                --output-file "$exported"
            uv pip install --python "$FASTFLOW_ENV_DIR" --requirements "$exported"
            ;;
        pyproject.toml)
            # shellcheck disable=SC2086
            uv pip install --python "$FASTFLOW_ENV_DIR" --requirements pyproject.toml $selection
            ;;
        ?*)
            uv pip install --python "$FASTFLOW_ENV_DIR" --requirements "$FASTFLOW_REQUIREMENTS"
            ;;
        esac
        fi
        mkdir -p "$wheelhouse"
        pins="$FASTFLOW_ENV_DIR.pins"
        "$FASTFLOW_ENV_DIR/bin/python" -I "$tools/environment_lock.py" \
            "$UV_CACHE_DIR" "$wheelhouse" "$pins"
        # The lock a run installs: the indexes the requirements name (uv finds their cached
        # pages by address, offline), then the pins.
        if [ -n "$FASTFLOW_INDEX_OPTIONS" ]; then
            printf '%s\n' "$FASTFLOW_INDEX_OPTIONS" | resolve_links >"$lock"
        fi
        cat "$pins" >>"$lock"
        check="$FASTFLOW_ENV_DIR.check"
        uv venv --quiet --no-project --python "${FASTFLOW_PYTHON:-python3}" "$check"
        if [ -s "$pins" ]; then
            UV_OFFLINE=1 uv pip install --quiet --python "$check" --no-deps \
                --find-links "$wheelhouse" --requirements "$lock"
        fi
        exit 0
    fi
    if [ -n "$FASTFLOW_LOCK" ]; then
        printf '%s\n' "$FASTFLOW_LOCK" | resolve_links >"$lock"
        if ! uv pip install --python "$FASTFLOW_ENV_DIR" --no-deps \
            --find-links "$wheelhouse" --requirements "$lock"; then
            [ "$FASTFLOW_CACHE_FALLBACK" = 1 ] || exit 1
            # A Swarm node that joined after the warm-up: exactly the lock, downloaded into
            # the run's own cache (the node's is filled by the next warm-up).
            printf '\036fastflow:note %s\n' "this Swarm node's uv cache lacks some of its \
packages: downloading exactly its lock for this run" >&2
            (unset UV_OFFLINE && uv pip install --python "$FASTFLOW_ENV_DIR" --no-deps \
                --find-links "$wheelhouse" --requirements "$lock")
        fi
    fi
    VIRTUAL_ENV="$FASTFLOW_ENV_DIR"
    PATH="$FASTFLOW_ENV_DIR/bin:$PATH"
    export VIRTUAL_ENV PATH
    python="$FASTFLOW_ENV_DIR/bin/python"
fi
launcher="$FASTFLOW_LAUNCHER"
unset FASTFLOW_ENV_DIR FASTFLOW_REQUIREMENTS FASTFLOW_PYTHON FASTFLOW_LAUNCHER
unset FASTFLOW_WARM_ONLY FASTFLOW_LOCK FASTFLOW_EXTRAS FASTFLOW_GROUPS FASTFLOW_INDEX_OPTIONS
unset FASTFLOW_CACHE_FALLBACK FASTFLOW_UV_VERSION
exec "$python" -u "$launcher" "$@"
