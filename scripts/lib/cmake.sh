# Sourced by scripts/serve and scripts/test. The bundled Opus build
# (opusic-sys) needs cmake, which a fresh machine does not have: take it from
# PyPI into a virtualenv under target/ (no root, nothing installed system-wide)
# when none is on PATH.
ensure_cmake() {
  command -v cmake >/dev/null && return 0
  local venv="target/tools"
  if [ ! -x "$venv/bin/cmake" ]; then
    echo "cmake not found: installing it from PyPI into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check cmake
  fi
  PATH="$PWD/$venv/bin:$PATH"
  export PATH
}
