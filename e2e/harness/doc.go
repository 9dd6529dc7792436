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
// # A node
//
// Options.Node adds what running pods takes: kube-controller-manager and
// kube-scheduler beside kube-apiserver, and containerd and kubelet in a
// sandbox (package e2e/internal/sandbox, started as e2e/cmd/nodesandbox):
// the init of new PID, mount, network and UTS namespaces, so that all the
// node's processes, mounts and network devices go with it, even after a
// SIGKILL of the test binary (its parent-death signal is SIGTERM, on which
// it stops everything and removes its state and the containers' cgroups).
// All state and sockets are in the Env's directory or the sandbox's own
// tmpfs, so that runs never share any. The pods' network is a bridge in the
// sandbox joined to the host by a veth; see nodeNet for the addresses and
// why the pods' in-cluster configuration works without kube-proxy. Nothing
// is pulled: image archives are imported (NodeOptions.Images), the sandbox
// image being the project's own pause program. It needs root.
//
// # HA topology
//
// Options.HA starts what production clusters run instead of one etcd and
// one kube-apiserver: a 3-member etcd cluster (static --initial-cluster on
// loopback ports), two or three kube-apiservers on it, each with its own
// port and watch cache, every member in its --etcd-servers, and one
// ServiceAccount signing key and issuer (a token minted on one works on
// all), and a round-robin TCP balancer (Balancer) in front of them, which
// Config and AdminKubeconfig name: each new connection goes to the next API
// server that accepts it, so that a client's requests and its watch may be
// served by different ones, as through a cloud load balancer. Each member's
// peer traffic passes through a proxy of the harness, so that
// PartitionEtcdMember can cut one member off from its peers, both ways,
// while its clients still reach it (the connections a member dials are told
// apart by their sockets' owner in /proc: every member dials from
// 127.0.0.1). Faults: KillEtcdMember/StartEtcdMember, EtcdLeader,
// PartitionEtcdMember/HealEtcdMember, KillAPIServerN/StartAPIServerN (the
// balancer sends a starting API server no client until it is ready, as a
// health check would), and Balancer().Disable/Drop to move clients to
// another API server; the calls that name no member (KillEtcd,
// KillAPIServer, ...) act on the whole tier. With Options.Detach (make up
// HA=1) the balancer is a process of its own (HAOptions.BalancerCommand)
// and there are no peer proxies: the members talk directly.
//
// # External clusters
//
// Options.Kubeconfig, or the environment variable KONLEASE_E2E_KUBECONFIG,
// selects an existing cluster instead. The ambient KUBECONFIG is deliberately
// ignored so that a developer's production context is never used by accident.
// Fault control then fails with ErrExternal; tests skip with Env.Local.
package harness
