# Argument checks shared by the side-by-side benchmark scripts (sourced).

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
