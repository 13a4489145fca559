# What the side-by-side benchmark scripts share (sourced after they set
# `here`, their folder): default paths and argument checks.

build="$(realpath -m "$here/../build")" # --build overrides it
python=/usr/bin/python3                 # Debian's python3-torch, not a pyenv python on PATH

# require_positive_integers SCRIPT NAME...: exits 2, naming the option, unless
# each variable NAME (set from --NAME) holds a positive integer.
require_positive_integers() {
  local script="$1" v
  shift
  for v in "$@"; do
    if ! [[ "${!v}" =~ ^[1-9][0-9]*$ ]]; then
      echo "$script: --$v must be a positive integer, got '${!v}'" >&2
      exit 2
    fi
  done
}
