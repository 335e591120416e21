#!/usr/bin/env bash
# Debian packages the test suite uses (headless Chromium for the report test). Installed
# only when missing; tests that need them skip with a reason if this could not install them.
set -u
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing ${need[*]} (apt)" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/tmp/tensortap-apt.log 2>&1 \
    || echo "warning: apt-get install ${need[*]} failed (see /tmp/tensortap-apt.log); those tests will skip" >&2
fi
exit 0
