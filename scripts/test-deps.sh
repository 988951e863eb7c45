#!/usr/bin/env bash
# Makes sure the real clients and peers the tests drive are installed (run by `npm test` before the suite):
#   skopeo                  image copies in and out (conformance/e2e)
#   docker.io               the Docker engine, for docker push/pull (conformance/e2e)
#   docker-registry         registry:2, for storage-layout compatibility both ways (server/registry)
# On Debian as root it installs what is missing with apt-get; elsewhere it says what to install and fails.
set -euo pipefail

need=()
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
[ "${#need[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" ca-certificates >/dev/null
  exit 0
fi
echo "test-deps: the tests need these Debian packages: ${need[*]}" >&2
echo "test-deps: install them (sudo apt-get install ${need[*]}) and run npm test again" >&2
exit 1
