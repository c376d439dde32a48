#!/usr/bin/env bash
# Builds the Kubemaas images for the real-pod tier (make e2e) with podman, without a
# daemon or a registry, from a Debian bookworm root filesystem made by mmdebstrap.
#
#   bash tests/cluster/images.sh [TARGET...]     build (default: operator serving training pause)
#   bash tests/cluster/images.sh --print-tags    print TARGET=IMAGE lines, build nothing
#   bash tests/cluster/images.sh --print-base    print the base image's name, build nothing
#   bash tests/cluster/images.sh --tags-from FILE [TARGET...]
#                                                build under the TARGET=IMAGE names in FILE (an
#                                                earlier --print-tags), whatever the tree is now
#
# Caching (everything under ${XDG_CACHE_HOME:-~/.cache}/kubemaas/images):
# - the base root filesystem is keyed by the sha256 of the mmdebstrap command line
#   below (suite + packages); it is built once and imported into podman's storage;
# - each image is tagged with the sha256 of its inputs (the Dockerfile, .dockerignore,
#   the files the Dockerfile copies, the base and the build arguments), so an unchanged
#   tree builds nothing: `podman image exists` answers in milliseconds;
# - podman's layer cache keeps the training image's torch layer (it depends only on the
#   torch requirement line), so a code change rebuilds only the small layers on top. The
#   Dockerfile's pip cache mounts help where the index's responses are cacheable (here
#   the HTTPS proxy's are not, so pip caches nothing and a new torch layer downloads again).
#
# `pause` is the pods' sandbox image: Debian's static catatonit in pause mode (-P), as
# podman's own infra containers use it; no registry holds it here.
#
# The proxy CA bundle that HTTPS from build steps needs is MOUNTED over the image's own
# /etc/ssl/certs/ca-certificates.crt for each RUN step (podman build --volume), never
# copied into a layer. crun fails on this machine's cgroup v1 layout, so runc runs the
# build steps.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/kubemaas/images"
ca_bundle="${KUBEMAAS_BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
suite=bookworm
# python-is-python3 puts `python` on the path, as in python:3.11-slim; python3-venv
# brings ensurepip; passwd gives groupadd/useradd.
base_packages=python3,python3-venv,python3-pip,python-is-python3,ca-certificates,passwd
base_args=(--variant=minbase --include="$base_packages"
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/locale/*' "$suite")
podman_flags=(--runtime runc --cgroup-manager cgroupfs --events-backend file)

die() {
  echo "images.sh: error: $*" >&2
  exit 1
}

base_hash="$(printf '%s\n' "${base_args[@]}" | sha256sum | cut -c1-12)"
base_image="localhost/kubemaas/base:$base_hash"

# The build context's content hash: the files the Dockerfile can see (.dockerignore is
# an allowlist of these), with caches left out.
context_hash() {
  (
    cd "$root"
    find Dockerfile .dockerignore pyproject.toml README.md operator runtime -type f \
      -not -path '*/__pycache__/*' -not -name '*.py[cod]' -not -path '*.egg-info/*' \
      -not -path '*/.mypy_cache/*' -not -path '*/.ruff_cache/*' -not -path '*/.pytest_cache/*' \
      -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    echo "base=$base_image TORCH_VARIANT=cuda"
  ) | sha256sum | cut -c1-12
}

all_targets=(operator serving training pause)
tag="$(context_hash)"
catatonit="${KUBEMAAS_CATATONIT:-/usr/bin/catatonit}"
pause_tag="$({ sha256sum "$catatonit" 2>/dev/null || echo missing; } | cut -c1-12)"

declare -A fixed=()
image_of() {
  if [[ -n "${fixed[$1]:-}" ]]; then
    echo "${fixed[$1]}"
  elif [[ "$1" == pause ]]; then
    echo "localhost/kubemaas/pause:$pause_tag"
  else
    echo "localhost/kubemaas/$1:$tag"
  fi
}

if [[ "${1:-}" == "--print-tags" ]]; then
  for t in "${all_targets[@]}"; do echo "$t=$(image_of "$t")"; done
  exit 0
fi
if [[ "${1:-}" == "--tags-from" ]]; then
  [[ -r "${2:-}" ]] || die "--tags-from needs a readable file, got '${2:-}'"
  while IFS='=' read -r target image; do
    [[ -n "$target" ]] && fixed[$target]="$image"
  done <"$2"
  shift 2
fi
if [[ "${1:-}" == "--print-base" ]]; then
  echo "$base_image"
  exit 0
fi

missing=()
for tool in podman mmdebstrap runc; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
((${#missing[@]} == 0)) || die "missing ${missing[*]} (apt-get install podman mmdebstrap runc)"
[[ -r "$ca_bundle" ]] || die "no CA bundle at $ca_bundle (set KUBEMAAS_BUILD_CA_BUNDLE)"
mkdir -p "$cache"

if ! podman "${podman_flags[@]}" image exists "$base_image"; then
  tarball="$cache/base-$base_hash.tar"
  if [[ ! -s "$tarball" ]]; then
    echo "images.sh: mmdebstrap ${base_args[*]} -> $tarball"
    start=$SECONDS
    mmdebstrap --quiet --format=tar "${base_args[@]}" "$tarball.tmp.$$" || {
      rm -f "$tarball.tmp.$$"
      die "mmdebstrap failed"
    }
    mv -f "$tarball.tmp.$$" "$tarball"
    echo "images.sh: base root filesystem in $((SECONDS - start))s ($(du -h "$tarball" | cut -f1))"
  fi
  podman "${podman_flags[@]}" import --quiet "$tarball" "$base_image" >/dev/null
fi

targets=("$@")
((${#targets[@]})) || targets=("${all_targets[@]}")
for target in "${targets[@]}"; do
  [[ " ${all_targets[*]} " == *" $target "* ]] || die "unknown target '$target' (one of: ${all_targets[*]})"
  image="$(image_of "$target")"
  if podman "${podman_flags[@]}" image exists "$image"; then
    echo "images.sh: $image up to date"
    continue
  fi
  if [[ "$target" == pause ]]; then
    [[ -x "$catatonit" ]] || die "no $catatonit (apt-get install catatonit)"
    dir="$(mktemp -d)"
    install -m 0755 "$catatonit" "$dir/pause"
    tar -C "$dir" -cf "$dir.tar" pause
    podman "${podman_flags[@]}" import --quiet --change 'ENTRYPOINT ["/pause", "-P"]' --change 'USER 65535:65535' \
      "$dir.tar" "$image" >/dev/null
    rm -rf "$dir" "$dir.tar"
    echo "images.sh: built $image"
    continue
  fi
  echo "images.sh: building $image ..."
  start=$SECONDS
  # TORCH_VARIANT=cuda: PyTorch's CPU wheel index is not reachable from this
  # machine, so torch comes from the default index (a CUDA build that runs on CPU).
  podman "${podman_flags[@]}" build --quiet --layers --network host \
    --volume "$ca_bundle:/etc/ssl/certs/ca-certificates.crt:ro" \
    --build-arg "PYTHON_IMAGE=$base_image" --build-arg TORCH_VARIANT=cuda \
    --target "$target" --tag "$image" --file "$root/Dockerfile" "$root" >/dev/null
  size="$(podman "${podman_flags[@]}" image inspect --format '{{.Size}}' "$image")"
  echo "images.sh: built $image in $((SECONDS - start))s ($((size / 1000000)) MB)"
  # Older builds of this target only fill the disk; the layers the new one shares stay.
  for old in $(podman "${podman_flags[@]}" images --format '{{.Repository}}:{{.Tag}}' "localhost/kubemaas/$target"); do
    [[ "$old" == "$image" ]] || podman "${podman_flags[@]}" rmi "$old" >/dev/null 2>&1 || true
  done
done
