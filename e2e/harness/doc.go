// Package harness gives konlease's end-to-end tests a real Kubernetes API:
// either a local control plane (etcd and kube-apiserver, built from source by
// `make controlplane` into bin/) or an existing cluster named explicitly by a
// kubeconfig path.
//
// # Why not envtest
//
// controller-runtime's envtest also starts etcd and kube-apiserver, but:
//
//   - Fault tests must stop, start and restart etcd and kube-apiserver one at
//     a time while keeping their ports and data, so that clients under test
//     reconnect to "the same" cluster. envtest starts and stops the whole
//     control plane only.
//   - Tests need restricted identities (a ServiceAccount allowed only some
//     verbs on leases). harness mints them with the TokenRequest API, which
//     works unchanged on kind and real clusters; envtest's users are client
//     certificates from its own CA, which do not exist anywhere else.
//   - envtest would add controller-runtime and its dependency tree to the
//     library's go.mod. harness needs only client-go, which the library
//     already requires, and never imports k8s.io/kubernetes (the binaries
//     are built from the nested module e2e/controlplane).
//
// # Processes
//
// Every child is started in its own process group with Pdeathsig=SIGKILL, so
// that a test binary that panics, times out or is killed with SIGKILL takes
// etcd and kube-apiserver with it. Options.Detach instead starts them in their
// own session without Pdeathsig so they outlive the caller (used by
// e2e/cmd/controlplane, behind `make up`); Attach reloads such a control plane
// from the state it leaves in its directory.
//
// # External clusters
//
// Options.Kubeconfig, or the environment variable KONLEASE_E2E_KUBECONFIG,
// selects an existing cluster instead. The ambient KUBECONFIG is deliberately
// ignored so that a developer's production context is never used by accident.
// Fault control then fails with ErrExternal; tests skip with Env.Local.
package harness
