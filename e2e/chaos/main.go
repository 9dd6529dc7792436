// Command chaos checks konlease's mutual exclusion under faults: it starts
// a local control plane (package harness) and a TCP proxy in front of
// kube-apiserver, runs worker processes that contend for a few mutexes
// (through the library and through `koncli mutex run`), injects faults
// from a seeded schedule, and judges the merged histories of the workers.
// It exits 1 on any violation. `make chaos` runs it; e2e/chaos_test.go
// runs a short version with the e2e suite.
//
// All processes run on one host, so a single clock (the host's wall clock,
// read in UTC nanoseconds) orders every recorded event.
//
// The binary is also its own worker (-mode worker) and the command that
// `koncli mutex run` runs (-mode cs).
package main

import (
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	var (
		mode = flag.String("mode", "orchestrate", "orchestrate; check (judge the histories of -history again); worker and cs (internal)")
		o    orchestrator
		w    workerConfig
	)
	flag.DurationVar(&o.duration, "duration", 3*time.Minute, "how long the workers run under faults")
	flag.Int64Var(&o.seed, "seed", 0, "seed of the fault schedule (0: from the time)")
	flag.StringVar(&o.historyDir, "history", "", "keep the history files in this directory (default: a temporary directory, removed)")
	flag.StringVar(&o.koncli, "koncli", "bin/koncli", "the koncli binary")
	flag.BoolVar(&o.noFaults, "no-faults", false, "inject no faults")
	flag.StringVar(&o.topology, "topology", topologySingle, "the control plane: single (one etcd, one kube-apiserver) or ha (three etcd members, two kube-apiservers behind a round-robin balancer)")
	flag.BoolVar(&o.selfTestNoLock, "selftest-nolock", false, "self-test: add a worker that enters critical sections without the lock; the run must then fail")
	flag.StringVar(&w.Name, "worker", "", "worker: name")
	flag.StringVar(&w.Kind, "kind", "", "worker: with, lock, koncli or nolock")
	flag.StringVar(&w.Mutex, "mutex", "", "worker: mutex")
	flag.DurationVar(&w.TTL, "ttl", 0, "worker: TTL")
	flag.DurationVar(&w.Skew, "skew", 0, "worker: offset of the lock client's wall clock")
	flag.DurationVar(&w.Timeout, "timeout", 15*time.Second, "worker: lock timeout")
	flag.StringVar(&w.Namespace, "namespace", "", "worker: namespace")
	flag.StringVar(&w.Kubeconfig, "kubeconfig", "", "worker: kubeconfig")
	flag.StringVar(&w.History, "history-dir", "", "worker: history directory")
	flag.StringVar(&w.Koncli, "koncli-bin", "", "worker: koncli binary")
	flag.Parse()
	var err error
	code := 0
	switch *mode {
	case "orchestrate":
		code, err = o.run()
	case "check":
		// Judge the histories kept by an earlier run (-history DIR) again.
		code, err = judge(o.historyDir)
	case "worker":
		err = runWorker(w)
	case "cs":
		err = runCS(w)
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos (%s): %v\n", *mode, err)
		if code == 0 {
			code = 2
		}
	}
	os.Exit(code)
}
