#!/usr/bin/env bash
# The kubectl floor: what an operator's shell does for faulty nodes, all of them at once.
# Taint each node so nothing new lands there, drain it (cordon, evict every pod but DaemonSet
# pods, wait until they are gone), then wait until the services they carried are available again.
#
#   kubectl_floor.sh KUBECTL KUBECONFIG NAMESPACE SERVICE[,SERVICE...] TIMEOUT NODE...
#
# Prints "drained <epoch seconds>" when every drain has returned.
set -u
kubectl=$1 kubeconfig=$2 namespace=$3 services=$4 timeout=$5
shift 5
k() { "$kubectl" --kubeconfig "$kubeconfig" "$@"; }

pids=()
for node in "$@"; do
  (k taint node "$node" bench.ai-infra.io/faulty=true:NoSchedule --overwrite >/dev/null &&
   k drain "$node" --ignore-daemonsets --delete-emptydir-data --timeout="${timeout}s" >/dev/null) &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do
  wait "$pid" || failed=1
done
echo "drained $(date +%s.%N)"
[ "$failed" = 0 ] || { echo "a drain failed" >&2; exit 1; }

for service in ${services//,/ }; do
  replicas=$(k get deployment "$service" -n "$namespace" -o jsonpath='{.spec.replicas}') || exit 1
  k wait deployment/"$service" -n "$namespace" --for=jsonpath='{.status.availableReplicas}'="$replicas" \
    --timeout="${timeout}s" >/dev/null || exit 1
done
