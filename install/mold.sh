#!/usr/bin/env bash
# mold links each notebook cell faster than the system linker; evcxr uses it
# when it is on PATH. Installed from Debian's packages when this runs as
# root with apt; otherwise cells link with the system linker.
set -uo pipefail
command -v mold >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing mold (the linker notebook cells use when it is there)"
  apt-get install -y -qq mold >/dev/null 2>&1 \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mold >/dev/null; } \
    || echo "warning: mold could not be installed; cells link with the system linker" >&2
fi
exit 0
