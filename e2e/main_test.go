//go:build e2e

// Package e2e holds konlease's end-to-end tests. They run against a local
// etcd and kube-apiserver (make e2e) or against the cluster named by
// KONLEASE_E2E_KUBECONFIG (make e2e-kind, make e2e-cluster); see package
// harness.
package e2e

import (
	"os"
	"testing"

	"github.com/konlease/konlease/e2e/harness"
)

// env is the control plane shared by every test in the package.
var env *harness.Env

func TestMain(m *testing.M) {
	// The test binary also serves as the worker process of multi-process
	// tests (process_test.go); a worker needs no control plane of its own.
	if os.Getenv(workerEnv) != "" {
		os.Exit(workerMain())
	}
	os.Exit(harness.Main(m, harness.Options{}, &env))
}
