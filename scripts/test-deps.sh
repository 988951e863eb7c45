#!/usr/bin/env bash
# Makes sure the real clients and peers the tests drive are installed (run by `npm test` before the suite):
#   skopeo                  image copies in and out (conformance/e2e)
#   docker.io               the Docker engine, for docker push/pull (conformance/e2e)
#   docker-registry         registry:2, for storage-layout compatibility both ways (server/registry)
#   redis-server            a real Redis for the blob-descriptor cache and the replica tests (server/cache, server/replicas)
#   ceph-mon ceph-osd radosgw  a throw-away single-node Ceph RADOS Gateway: the real S3 the s3 driver tests use
#   openssl                 an independent reader of the certificate the token server makes (auth/x509.test.ts)
#   chromium                the headless browser the web UI's tests drive through playwright-core (conformance/e2e/ui.test.ts)
# On Debian as root it installs what is missing with apt-get; elsewhere it says what to install and fails.
set -euo pipefail

need=()
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v ceph-mon >/dev/null 2>&1 || need+=(ceph-mon)
command -v ceph-osd >/dev/null 2>&1 || need+=(ceph-osd)
command -v radosgw >/dev/null 2>&1 || need+=(radosgw)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -x /usr/bin/chromium ] || need+=(chromium)
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
