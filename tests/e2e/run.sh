#!/usr/bin/env bash
# `make e2e`: the whole lineage in real containers on a real Node of this machine.
#
# 1. checks that this machine can host a Node (root, apt-get); where it cannot, says
#    exactly what is missing and exits 0 -- except under CI=true, where that fails;
# 2. installs the Debian packages the Node needs, by name, only those not installed;
# 3. builds the pinned control-plane and Node binaries (tests/cluster/build.sh [--node])
#    and the images (tests/cluster/images.sh), each a no-op when its inputs are unchanged;
# 4. runs tests/e2e/test_realpods.py with KUBEMAAS_E2E=1 and prints what it measured.
#
# Environment: KUBEMAAS_E2E_TIMEOUT (seconds per wait, default 900),
# KUBEMAAS_E2E_REPORT (JSON report path, default /tmp/kubemaas-e2e-report.json).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
python="${PYTHON:-$root/.venv/bin/python}"
export KUBEMAAS_E2E_REPORT="${KUBEMAAS_E2E_REPORT:-/tmp/kubemaas-e2e-report.json}"
# Keep in step with tests/cluster/node.py APT_PACKAGES.
packages=(containerd runc containernetworking-plugins iptables conntrack iproute2 podman buildah mmdebstrap catatonit)

skip() {
  echo "make e2e: skipped: $*"
  if [[ "${CI:-}" == "true" ]]; then
    echo "make e2e: CI=true, so a skip is a failure" >&2
    exit 1
  fi
  exit 0
}

[[ "$(id -u)" == 0 ]] || skip "not root (uid $(id -u)): containerd, the kubelet and CNI networking need root"
command -v apt-get >/dev/null || skip "no apt-get: install ${packages[*]} (Debian bookworm names) by hand"
[[ -x "$python" ]] || skip "no Python at $python (make venv)"

began=$SECONDS
phase() { printf '\n==> [%4ds] %s\n' "$((SECONDS - began))" "$*"; }

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  phase "apt-get install ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

phase "control-plane and node binaries"
bash tests/cluster/build.sh
bash tests/cluster/build.sh --node

phase "images"
# The tags are fixed now: the tests use these images even if the tree changes meanwhile.
KUBEMAAS_E2E_IMAGES="$(mktemp)"
export KUBEMAAS_E2E_IMAGES
trap 'rm -f "$KUBEMAAS_E2E_IMAGES"' EXIT
bash tests/cluster/images.sh --print-tags >"$KUBEMAAS_E2E_IMAGES"
bash tests/cluster/images.sh --tags-from "$KUBEMAAS_E2E_IMAGES" operator serving training pause

# -x: each test builds on the ones before it.
phase "tests/e2e/test_realpods.py"
status=0
KUBEMAAS_E2E=1 "$python" -m pytest tests/e2e/test_realpods.py -p no:cacheprovider -v -rs -x || status=$?
if [[ -s "$KUBEMAAS_E2E_REPORT" ]]; then
  phase "measured ($KUBEMAAS_E2E_REPORT)"
  cat "$KUBEMAAS_E2E_REPORT"
fi
phase "done, exit $status"
exit "$status"
