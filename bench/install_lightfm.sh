#!/usr/bin/env bash
# Install LightFM 1.17 (benchmark-only dependency of bench/quality.py) into the active Python env.
#
# LightFM 1.17's setup.py assigns to ``__builtins__.__LIGHTFM_SETUP__``, which fails when
# ``__builtins__`` is a dict (any non-__main__ import, e.g. under pip's build backend), so plain
# ``pip install lightfm`` breaks. This builds it from the sdist with that one line patched.
# ``pip download`` of the sdist runs that setup.py too (to read its metadata); pip >= 25.3 can only
# do so through the build backend, so the download goes through a throw-away venv with an older pip
# and ``--no-use-pep517`` (setup.py run as a script, where the line works).
#
#     . .venv/bin/activate && bash bench/install_lightfm.sh
set -euo pipefail

PY=${PYTHON:-python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/lightfm-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

"$PY" -m pip install numpy scipy cython setuptools wheel
"$PY" -m venv "$WORK/dl"
"$WORK/dl/bin/python" -m pip install -q "pip>=23,<25.3" setuptools wheel
"$WORK/dl/bin/python" -m pip download lightfm==1.17 --no-deps --no-binary :all: --no-use-pep517 -d "$WORK"
cd "$WORK"
tar xzf lightfm-1.17.tar.gz
cd lightfm-1.17
sed -i 's/^__builtins__.__LIGHTFM_SETUP__ = True/import builtins; builtins.__LIGHTFM_SETUP__ = True/' setup.py
"$PY" -m pip install . --no-build-isolation
cd /  # import from outside the source folder
"$PY" -c "import lightfm; from lightfm import LightFM; print('lightfm', lightfm.__version__, 'OK')"
