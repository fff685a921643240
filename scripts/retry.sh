# Sourced by the install scripts: `retry CMD...` runs CMD up to 4 times, 5, 10 and 20 s apart.
# Downloads from apt, npm and PyPI can be cut mid-way by a dropped connection; one such cut must
# not fail the whole test run.
retry() {
  local attempt=1 wait=5
  until "$@"; do
    if [ "$attempt" -ge 4 ]; then
      echo "failed $attempt times: $*" >&2
      return 1
    fi
    echo "attempt $attempt failed, again in ${wait} s: $*" >&2
    sleep "$wait"
    attempt=$((attempt + 1))
    wait=$((wait * 2))
  done
}
