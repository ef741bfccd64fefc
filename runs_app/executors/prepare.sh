#!/bin/sh
# Builds a run's Python environment and starts the launcher in it (POSIX sh, no bash).
#
#   prepare.sh ENTRY_POINT          in the pipeline folder
#
# FASTFLOW_ENV_DIR       where the run's own environment is made (writable, the run's)
# FASTFLOW_REQUIREMENTS  requirements file to install, or empty
# FASTFLOW_PYTHON        Python version to use, or empty (the image's python3)
# FASTFLOW_LAUNCHER      the launcher (runs_app/executors/launcher.py)
# FASTFLOW_WARM_ONLY     1: only install (the warm-up fills the shared uv cache), no code
#
# In a run container the shared uv cache is read-only and UV_OFFLINE is set: the packages
# are linked from the cache (UV_LINK_MODE=symlink) into the run's own environment, and
# nothing is downloaded or changed in the cache. Only a warm-up may write to the cache.
set -e
printf '\036fastflow:uv %s\n' "$(uv --version)" >&2
python=python3
if [ -n "$FASTFLOW_REQUIREMENTS" ] || [ -n "$FASTFLOW_PYTHON" ]; then
    uv venv --quiet --no-project --python "${FASTFLOW_PYTHON:-python3}" "$FASTFLOW_ENV_DIR"
    if [ -n "$FASTFLOW_REQUIREMENTS" ]; then
        uv pip install --python "$FASTFLOW_ENV_DIR" --requirements "$FASTFLOW_REQUIREMENTS"
    fi
    VIRTUAL_ENV="$FASTFLOW_ENV_DIR"
    PATH="$FASTFLOW_ENV_DIR/bin:$PATH"
    export VIRTUAL_ENV PATH
    python="$FASTFLOW_ENV_DIR/bin/python"
fi
if [ "$FASTFLOW_WARM_ONLY" = 1 ]; then
    # What the environment holds (names and versions), for the dependency audit.
    "$python" - >&2 <<'PY'
import importlib.metadata as metadata
import json

found = sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()})
print("\036fastflow:resolved " + json.dumps(found))
PY
    exit 0
fi
launcher="$FASTFLOW_LAUNCHER"
unset FASTFLOW_ENV_DIR FASTFLOW_REQUIREMENTS FASTFLOW_PYTHON FASTFLOW_LAUNCHER FASTFLOW_WARM_ONLY
exec "$python" -u "$launcher" "$@"
