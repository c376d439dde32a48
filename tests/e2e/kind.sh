#!/usr/bin/env bash
# Kubemaas end to end on a kind cluster: the way to try it on a laptop with Docker.
#
#   make kind-e2e            (or: bash tests/e2e/kind.sh)
#
# 1. creates a kind cluster (reuses one of the same name),
# 2. builds the three images from the Dockerfile (targets `operator`, `serving` and
#    `training`) and `kind load`s them,
# 3. `helm install`s charts/kubemaas with those images,
# 4. applies examples/trainingjob.yaml and examples/modelservice.yaml (digits recipe,
#    compression auto, trainingJobRef), creating the PersistentVolumeClaims their
#    pvc:// URIs name,
# 5. waits for the TrainingJob to succeed and the ModelService to be READY,
# 6. port-forwards its Service and sends real Open Inference Protocol v2 requests with
#    tritonclient (tests/e2e/check_endpoint.py: accuracy on held-out sklearn digits),
# 7. scales the ModelService, updates it (a rollout), checks again, and deletes it,
#    waiting for its children to be garbage-collected.
#
# Where Docker (a CLI whose `docker info` reaches an engine) or kind is missing it
# prints "skipped: ..." and exits 0. kubectl and helm come from PATH, else from the
# pinned control-plane binaries (`make cluster-binaries`).
#
# Environment:
#   KUBEMAAS_KIND_CLUSTER   kind cluster name              (default kubemaas-e2e)
#   KUBEMAAS_E2E_NAMESPACE  namespace of the examples      (default kubemaas-e2e)
#   KUBEMAAS_E2E_KEEP=1     keep the cluster afterwards    (default: delete it if we created it)
#   KUBEMAAS_E2E_TIMEOUT    seconds for training+rollout   (default 1800)
#   KUBEMAAS_E2E_PORT       local port for port-forward    (default 18080)
#   KUBEMAAS_E2E_MIN_ACCURACY  accuracy the endpoint must reach on held-out digits (default 0.9)
#   PYTHON                  interpreter with tritonclient and scikit-learn (default .venv/bin/python)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cluster="${KUBEMAAS_KIND_CLUSTER:-kubemaas-e2e}"
ns="${KUBEMAAS_E2E_NAMESPACE:-kubemaas-e2e}"
system_ns="kubemaas-system"
release="kubemaas"
tag="e2e"
timeout="${KUBEMAAS_E2E_TIMEOUT:-1800}"
port="${KUBEMAAS_E2E_PORT:-18080}"
min_accuracy="${KUBEMAAS_E2E_MIN_ACCURACY:-0.9}"
python="${PYTHON:-$root/.venv/bin/python}"

log() { printf '\n==> %s\n' "$*"; }
die() {
  echo "kind.sh: error: $*" >&2
  exit 1
}
skip() {
  echo "skipped: $*"
  exit 0
}

# -- prerequisites (skip where Docker or kind cannot run) -----------------------------------------
command -v docker >/dev/null 2>&1 || skip "docker/kind not found: no docker CLI on PATH"
docker info >/dev/null 2>&1 || skip "docker/kind not found: the docker CLI is here but no Docker engine answers \`docker info\`"
command -v kind >/dev/null 2>&1 || skip "docker/kind not found: no kind on PATH"

if ! command -v kubectl >/dev/null 2>&1 || ! command -v helm >/dev/null 2>&1; then
  bin_dir="$(bash "$root/tests/cluster/build.sh" --print-bin-dir)"
  export PATH="$PATH:$bin_dir"
fi
command -v kubectl >/dev/null 2>&1 || die "kubectl not found (install it, or run \`make cluster-binaries\`)"
command -v helm >/dev/null 2>&1 || die "helm not found (install it, or run \`make cluster-binaries\`)"
[[ -x "$python" ]] || die "no Python at $python (run \`make venv\`, or set PYTHON)"
"$python" -c "import tritonclient.http, sklearn" 2>/dev/null \
  || die "$python lacks tritonclient[http] or scikit-learn (pip install -e '.[train,dev]')"

# -- cleanup --------------------------------------------------------------------------------------
created_cluster=0
forward_pid=""
stop_forward() {
  if [[ -n "$forward_pid" ]]; then
    kill "$forward_pid" 2>/dev/null || true
    wait "$forward_pid" 2>/dev/null || true
    forward_pid=""
  fi
}
cleanup() {
  local rc=$?
  stop_forward
  if ((rc != 0)) && kubectl cluster-info >/dev/null 2>&1; then
    echo "--- diagnostics (exit $rc) ---" >&2
    kubectl get trainingjobs,modelservices,jobs,deployments,pods -n "$ns" -o wide >&2 || true
    kubectl describe modelservices -n "$ns" >&2 || true
    kubectl logs -n "$system_ns" "deployment/$release" --tail=100 >&2 || true
  fi
  if ((created_cluster)) && [[ "${KUBEMAAS_E2E_KEEP:-0}" != "1" ]]; then
    kind delete cluster --name "$cluster" || true
  fi
  exit "$rc"
}
trap cleanup EXIT

# Poll `$@` until it succeeds, for at most $1 seconds; the message names what we waited for.
wait_until() {
  local seconds="$1" what="$2"
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${seconds}s waiting for $what"
    sleep 2
  done
}

# -- cluster and images ---------------------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  log "reusing kind cluster $cluster"
else
  log "creating kind cluster $cluster"
  kind create cluster --name "$cluster" --wait 180s
  created_cluster=1
fi
kubectl config use-context "kind-$cluster" >/dev/null

log "building images (Dockerfile targets operator, serving and training)"
for target in operator serving training; do
  docker build --target "$target" -t "kubemaas/$target:$tag" "$root"
done
log "loading images into kind"
kind load docker-image --name "$cluster" "kubemaas/operator:$tag" "kubemaas/serving:$tag" "kubemaas/training:$tag"

# -- install --------------------------------------------------------------------------------------
log "helm install $release (charts/kubemaas)"
helm upgrade --install "$release" "$root/charts/kubemaas" \
  --namespace "$system_ns" --create-namespace \
  --set image.repository=kubemaas/operator --set "image.tag=$tag" --set image.pullPolicy=Never \
  --set servingImage.repository=kubemaas/serving --set "servingImage.tag=$tag" \
  --set trainingImage.repository=kubemaas/training --set "trainingImage.tag=$tag" \
  --set workloadImagePullPolicy=Never \
  --wait --timeout 5m
kubectl -n "$system_ns" rollout status "deployment/$release" --timeout=120s

kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -

# Every pvc://<claim> the examples and the model store name needs a claim (kind's default
# StorageClass provisions it; all pods share kind's one node, so ReadWriteOnce suffices).
model_store="$(helm get values "$release" -n "$system_ns" --all -o json \
  | "$python" -c 'import json, sys; print(json.load(sys.stdin)["config"]["modelStoreUri"])')"
claims="$( { grep -ohE 'pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?' "$root"/examples/trainingjob.yaml \
  "$root"/examples/modelservice.yaml || true; echo "$model_store"; } \
  | sed -nE 's#^pvc://([a-z0-9-]+).*#\1#p' | sort -u)"
for claim in $claims; do
  log "PersistentVolumeClaim $claim"
  kubectl apply -n "$ns" -f - <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: $claim
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 1Gi
EOF
done

# -- train, compress, serve -----------------------------------------------------------------------
log "kubectl apply -f examples/trainingjob.yaml -f examples/modelservice.yaml"
kubectl apply -n "$ns" -f "$root/examples/trainingjob.yaml" -f "$root/examples/modelservice.yaml"
tj="$(kubectl get -n "$ns" -f "$root/examples/trainingjob.yaml" -o jsonpath='{.metadata.name}')"
msvc="$(kubectl get -n "$ns" -f "$root/examples/modelservice.yaml" -o jsonpath='{.metadata.name}')"

log "waiting for TrainingJob $tj to succeed"
kubectl wait -n "$ns" "trainingjob/$tj" --for=jsonpath='{.status.phase}'=Succeeded --timeout="${timeout}s"
kubectl get -n "$ns" "trainingjob/$tj"

log "waiting for ModelService $msvc to be READY"
kubectl wait -n "$ns" "modelservice/$msvc" --for=condition=Ready --timeout="${timeout}s"
kubectl get -n "$ns" msvc

# status.url is the in-cluster v2 URL: http://<service>.<ns>.svc[...][:port][/v2/models/<name>]
url="$(kubectl get -n "$ns" "modelservice/$msvc" -o jsonpath='{.status.url}')"
[[ -n "$url" ]] || die "ModelService $msvc is Ready but has no status.url"
hostport="${url#*://}"
path="/${hostport#*/}"
[[ "$hostport" == */* ]] || path="/"
hostport="${hostport%%/*}"
service="${hostport%%.*}"
service_port="$(kubectl get -n "$ns" "service/$service" -o jsonpath='{.spec.ports[0].port}')"
model="$msvc"
[[ "$path" =~ ^/v2/models/([^/]+) ]] && model="${BASH_REMATCH[1]}"

check_endpoint() {
  stop_forward
  kubectl port-forward -n "$ns" "service/$service" "$port:$service_port" >/dev/null 2>&1 &
  forward_pid=$!
  wait_until 60 "port-forward to service/$service" \
    "$python" -c "import socket; socket.create_connection(('127.0.0.1', $port), timeout=1).close()"
  "$python" "$root/tests/e2e/check_endpoint.py" --url "127.0.0.1:$port" --model "$model" \
    --min-accuracy "$min_accuracy"
  stop_forward
}

log "v2 requests through kubectl port-forward (service/$service:$service_port, model $model)"
check_endpoint

# -- day 2: scale, update, delete -----------------------------------------------------------------
ready_replicas() {
  [[ "$(kubectl get -n "$ns" "modelservice/$msvc" -o jsonpath='{.status.readyReplicas}')" == "$1" ]]
}
log "kubectl scale modelservice/$msvc --replicas=3"
kubectl scale -n "$ns" "modelservice/$msvc" --replicas=3
wait_until 600 "ModelService $msvc to report 3 ready replicas" ready_replicas 3

log "update: spec.runtime.maxBatchSize=8 (rolls the serving pods)"
generation="$(kubectl get -n "$ns" "modelservice/$msvc" -o jsonpath='{.metadata.generation}')"
kubectl patch -n "$ns" "modelservice/$msvc" --type=merge -p '{"spec":{"runtime":{"maxBatchSize":8}}}'
observed() {
  [[ "$(kubectl get -n "$ns" "modelservice/$msvc" -o jsonpath='{.status.observedGeneration}')" -gt "$generation" ]]
}
wait_until 600 "ModelService $msvc to observe the update" observed
kubectl wait -n "$ns" "modelservice/$msvc" --for=condition=Ready --timeout=600s
check_endpoint

log "kubectl delete modelservice/$msvc (owner references remove its children)"
kubectl delete -n "$ns" "modelservice/$msvc" --wait=true --timeout=120s
children_gone() {
  [[ -z "$(kubectl get -n "$ns" deployments,services,horizontalpodautoscalers \
    -l "kubemaas.io/modelservice=$msvc" -o name)" ]]
}
wait_until 180 "the children of ModelService $msvc to be deleted" children_gone
kubectl delete -n "$ns" "trainingjob/$tj" --wait=true --timeout=120s

log "kind end-to-end passed"
