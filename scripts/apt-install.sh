# Sourced by the test and benchmark scripts: `apt_install PKG...` installs Debian packages
# (with sudo when not root), keeping their init scripts from starting system-wide services
# (an nginx or HAProxy the benchmarks would collide with). Downloads are retried (scripts/retry.sh).
. scripts/retry.sh
apt_install() {
  echo "installing $*" >&2
  local sudo="" cleanup_policy=false
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    cleanup_policy=true
  fi
  retry $sudo apt-get update -qq
  retry $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  if $cleanup_policy; then $sudo rm -f /usr/sbin/policy-rc.d; fi
}
