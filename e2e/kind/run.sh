#!/usr/bin/env bash
# Runs a test command (the arguments) against a throwaway kind cluster:
# creates a uniquely named cluster, passes its kubeconfig to the tests in
# KONLEASE_E2E_KUBECONFIG, and deletes the cluster on every exit, success,
# failure or interrupt. Needs a container engine kind supports (Docker).
# Used by `make e2e-kind`; KIND is the kind binary (default bin/kind);
# IMAGES are image archives (make image, make node-images) loaded into the
# cluster's node, so that the node tests (e2e/node) run their pods there as
# on the harness's local node.
set -euo pipefail

cd "$(dirname "$0")/../.."
kind=${KIND:-bin/kind}
if [ "$#" -eq 0 ]; then
	echo "usage: $0 test-command [args...]" >&2
	exit 2
fi

name="konlease-e2e-$(date +%s)-$$"
dir=$(mktemp -d)
# A kubeconfig of our own: kind must not touch KUBECONFIG or ~/.kube/config.
kubeconfig="$dir/kubeconfig"

cleanup() {
	echo "deleting kind cluster $name" >&2
	"$kind" delete cluster --name "$name" --kubeconfig "$kubeconfig" ||
		echo "warning: could not delete kind cluster $name; run: $kind delete cluster --name $name" >&2
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$kind" create cluster --name "$name" --config e2e/kind/kind-config.yaml \
	--kubeconfig "$kubeconfig" --wait 5m
for archive in ${IMAGES:-}; do
	"$kind" load image-archive --name "$name" "$archive"
done
KONLEASE_E2E_KUBECONFIG="$kubeconfig" "$@"
