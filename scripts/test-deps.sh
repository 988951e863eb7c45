#!/usr/bin/env bash
# Makes sure the real clients and peers the tests drive are installed (run by `npm test` before the suite):
#   skopeo                  image copies in and out (conformance/e2e)
#   docker.io               the Docker engine, for docker push/pull (conformance/e2e)
#   docker-registry         registry:2, for storage-layout compatibility both ways (server/registry)
#   openssl                 the certificate the built-in token server makes on first start (auth/, server/http)
# On Debian as root it installs what is missing with apt-get; elsewhere it says what to install and fails.
set -euo pipefail

need=()
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# Optional: without helm, Go with Debian's sprig and yaml.v3 sources lets helm/chart.test.ts render the chart
# (helm/render/main.go); without either, those tests are skipped. Installed only where apt-get can, never required.
optional=()
if ! command -v helm >/dev/null 2>&1; then
  command -v go >/dev/null 2>&1 || optional+=(golang-go)
  [ -d /usr/share/gocode/src/github.com/Masterminds/sprig ] || optional+=(golang-github-masterminds-sprig-dev)
  [ -d /usr/share/gocode/src/gopkg.in/yaml.v3 ] || optional+=(golang-gopkg-yaml.v3-dev)
fi
if [ "${#need[@]}" -eq 0 ] && { [ "${#optional[@]}" -eq 0 ] || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; }; then
  exit 0
fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: installing ${need[*]} ${optional[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" "${optional[@]}" ca-certificates >/dev/null
  exit 0
fi
echo "test-deps: the tests need these Debian packages: ${need[*]}" >&2
echo "test-deps: install them (sudo apt-get install ${need[*]}) and run npm test again" >&2
exit 1
