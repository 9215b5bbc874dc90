#!/usr/bin/env bash
# Make sure Debian's Chromium and its WebDriver are installed (the browser tests,
# tests/e2e, drive /usr/bin/chromium through /usr/bin/chromedriver; nothing is downloaded
# at run time). Quick when both are present. SKIP_BROWSER=1 leaves the machine alone.
set -euo pipefail
[ "${SKIP_BROWSER:-0}" = "1" ] && exit 0

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
echo "installing chromium and chromium-driver from Debian's packages"
as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || {
  echo "chromium or chromedriver still missing after the install" >&2
  exit 1
}
