#!/usr/bin/env bash
# Builds the test control plane's binaries from the Go modules pinned beside this
# script: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
# kwok and helm. With --node, builds instead the real Node's binaries for `make e2e`:
# kubelet and kube-proxy (module k8s-node/, the same k8s.io/kubernetes release) and
# CoreDNS (module coredns/).
#
# Output: ~/.cache/kubemaas/k8s-<version>-<pin hash>/bin, or $KUBEMAAS_K8S_BIN_DIR;
# with --node, ~/.cache/kubemaas/node-<version>-<node pin hash>/bin, or
# $KUBEMAAS_NODE_BIN_DIR. The pin hash covers every go.mod/go.sum of that set of
# modules, so a new pin gets a new directory and an unchanged pin is a no-op
# (tests/cluster/harness.py and tests/cluster/node.py compute the same paths); the two
# sets are keyed apart, so adding node binaries never rebuilds the control plane.
# After changing only the flags below, delete the directory to rebuild. A binary is
# moved into place only after its build succeeded, so an interrupted run never leaves
# a half-written binary behind.
#
# Usage: bash tests/cluster/build.sh [--node] [--print-bin-dir]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
node=false
if [[ "${1:-}" == "--node" ]]; then
  node=true
  shift
fi
if $node; then
  modules=(k8s-node coredns)
else
  modules=(k8s etcd kwok helm)
fi

die() {
  echo "build.sh: error: $*" >&2
  exit 1
}

# Keep in step with harness.pin_hash(): the same files, in the same order.
pin_files=()
for m in "${modules[@]}"; do
  pin_files+=("$here/$m/go.mod" "$here/$m/go.sum")
done

# Keep in step with harness.k8s_version(): the k8s.io/kubernetes requirement.
k8s_version="$(sed -nE 's#^[[:space:]]*(require[[:space:]]+)?k8s\.io/kubernetes[[:space:]]+(v[0-9][^[:space:]]*).*#\2#p' "$here/k8s/go.mod" | head -n1)"
[[ -n "$k8s_version" ]] || die "no k8s.io/kubernetes requirement in $here/k8s/go.mod"
node_k8s_version="$(sed -nE 's#^[[:space:]]*(require[[:space:]]+)?k8s\.io/kubernetes[[:space:]]+(v[0-9][^[:space:]]*).*#\2#p' "$here/k8s-node/go.mod" | head -n1)"
[[ "$node_k8s_version" == "$k8s_version" ]] || die "k8s-node/go.mod pins k8s.io/kubernetes $node_k8s_version but k8s/go.mod pins $k8s_version: keep them equal"
pin_hash="$(cat "${pin_files[@]}" | sha256sum | cut -c1-12)"
if $node; then
  bin_dir="${KUBEMAAS_NODE_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubemaas/node-$k8s_version-$pin_hash/bin}"
else
  bin_dir="${KUBEMAAS_K8S_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubemaas/k8s-$k8s_version-$pin_hash/bin}"
fi

if [[ "${1:-}" == "--print-bin-dir" ]]; then
  echo "$bin_dir"
  exit 0
fi

command -v go >/dev/null || die "the Go toolchain is not on PATH (need Go >= 1.26 for kwok)"

# Version stamps, as upstream's hack/lib/version.sh sets them, so that the API
# server's /version and `kubectl version` report the real release (helm and kwok
# read the server version).
ver="${k8s_version#v}"
major="${ver%%.*}"
minor="${ver#*.}"
minor="${minor%%.*}"
build_date="2026-02-10T12:53:36Z" # the release tag's date, for reproducible output
kube_ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  kube_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  kube_ldflags+=" -X $pkg.gitTreeState=archive -X $pkg.buildDate=$build_date"
done
helm_version="$(sed -nE 's#^[[:space:]]*(require[[:space:]]+)?helm\.sh/helm/v3[[:space:]]+(v[0-9][^[:space:]]*).*#\2#p' "$here/helm/go.mod" | head -n1)"
[[ -n "$helm_version" ]] || die "no helm.sh/helm/v3 requirement in $here/helm/go.mod"
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
helm_ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=archive"
# Helm's chart rendering reports this as .Capabilities.KubeVersion when it has no cluster.
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  helm_ldflags+=" -X $pkg.k8sVersionMajor=$major -X $pkg.k8sVersionMinor=$minor"
done

# name|module dir|package|ldflags
if $node; then
  targets=(
    "kubelet|k8s-node|k8s.io/kubernetes/cmd/kubelet|$kube_ldflags"
    "kube-proxy|k8s-node|k8s.io/kubernetes/cmd/kube-proxy|$kube_ldflags"
    "coredns|coredns|github.com/coredns/coredns|-s -w"
  )
else
  targets=(
    "etcd|etcd|go.etcd.io/etcd/server/v3|-s -w"
    "kube-apiserver|k8s|k8s.io/kubernetes/cmd/kube-apiserver|$kube_ldflags"
    "kube-controller-manager|k8s|k8s.io/kubernetes/cmd/kube-controller-manager|$kube_ldflags"
    "kube-scheduler|k8s|k8s.io/kubernetes/cmd/kube-scheduler|$kube_ldflags"
    "kubectl|k8s|k8s.io/kubernetes/cmd/kubectl|$kube_ldflags"
    "kwok|kwok|sigs.k8s.io/kwok/cmd/kwok|-s -w"
    "helm|helm|helm.sh/helm/v3/cmd/helm|$helm_ldflags"
  )
fi

mkdir -p "$bin_dir" || die "cannot create $bin_dir"
echo "build.sh: Kubernetes $k8s_version, pin $pin_hash -> $bin_dir"
export CGO_ENABLED=0
# Two compile jobs: the reference machine has 2 cores and 24 GiB.
export GOFLAGS="-p=${KUBEMAAS_BUILD_JOBS:-2} -mod=readonly -trimpath -buildvcs=false ${GOFLAGS:-}"
total_start=$SECONDS
built=0
for target in "${targets[@]}"; do
  IFS='|' read -r name mod pkg ldflags <<<"$target"
  if [[ -x "$bin_dir/$name" ]]; then
    echo "  $name: up to date"
    continue
  fi
  echo "  $name: building $pkg ..."
  start=$SECONDS
  tmp="$bin_dir/.$name.tmp.$$"
  if ! (cd "$here/$mod" && go build -ldflags "$ldflags" -o "$tmp" "$pkg"); then
    rm -f "$tmp"
    die "building $name ($pkg in tests/cluster/$mod) failed; see the compiler output above"
  fi
  mv -f "$tmp" "$bin_dir/$name"
  built=$((built + 1))
  echo "  $name: built in $((SECONDS - start))s ($(du -h "$bin_dir/$name" | cut -f1))"
done
echo "build.sh: $built built, $((${#targets[@]} - built)) up to date, $((SECONDS - total_start))s in all"
