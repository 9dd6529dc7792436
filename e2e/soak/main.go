// Command soak puts one local API server (package harness) under sustained
// load from several worker processes: mutexes held and renewed for the
// whole run, waiters parked on some of them, and mutexes under constant
// handoff. It reports the API server's requests per second by verb, its
// CPU and memory, each worker's heap and goroutines over time and the
// handoff latency under load against an unloaded baseline taken first in
// the same run. It exits 1 when a safety or leak property fails (a hold
// lost or duplicated, overlapping critical sections, goroutines growing);
// performance targets are reported, not enforced. `make soak` runs it;
// e2e/soak_test.go runs a short, smaller version with the e2e suite.
//
// The binary is also its own worker (-mode worker).
package main

import (
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	var (
		mode = flag.String("mode", "orchestrate", "orchestrate, or worker (internal)")
		o    orchestrator
		w    workerConfig
	)
	flag.DurationVar(&o.duration, "duration", 5*time.Minute, "length of the run, baseline included")
	flag.IntVar(&o.workers, "workers", 4, "worker processes")
	flag.IntVar(&o.held, "held", 500, "mutexes held and renewed for the whole run")
	flag.IntVar(&o.waiters, "waiters", 1000, "waiters parked on held mutexes")
	flag.IntVar(&o.parkedOn, "parked-on", 100, "held mutexes the waiters wait on")
	flag.IntVar(&o.handoff, "handoff", 20, "mutexes under constant handoff")
	flag.IntVar(&o.contenders, "contenders", 3, "contenders per handoff mutex")
	flag.DurationVar(&o.ttl, "ttl", 10*time.Second, "TTL of every mutex")
	flag.DurationVar(&o.holdFor, "hold-for", 10*time.Millisecond, "length of a handoff critical section")
	flag.DurationVar(&o.sample, "sample", 5*time.Second, "interval of the workers' heap and goroutine samples")
	flag.BoolVar(&o.selfTestSteal, "selftest-steal", false, "self-test: force-unlock a held mutex under its holder; the run must then fail")
	flag.StringVar(&w.Name, "worker", "", "worker: name")
	flag.StringVar(&w.Kubeconfig, "kubeconfig", "", "worker: kubeconfig")
	flag.StringVar(&w.Namespace, "namespace", "", "worker: namespace")
	flag.DurationVar(&w.TTL, "worker-ttl", 0, "worker: TTL")
	flag.DurationVar(&w.HoldFor, "worker-hold-for", 0, "worker: handoff critical section")
	flag.DurationVar(&w.Sample, "worker-sample", 5*time.Second, "worker: sample interval")
	flag.Var(&w.Held, "held-span", "worker: held mutexes lo:hi")
	flag.Var(&w.Waiters, "waiter-span", "worker: waiters lo:hi")
	flag.IntVar(&w.ParkedOn, "worker-parked-on", 1, "worker: held mutexes waited on")
	flag.Var(&w.Contenders, "contender-span", "worker: contenders lo:hi")
	flag.IntVar(&w.HandoffMutexes, "worker-handoff", 1, "worker: handoff mutexes")
	flag.Parse()
	var err error
	code := 0
	switch *mode {
	case "orchestrate":
		code, err = o.run()
	case "worker":
		err = runWorker(w)
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak (%s): %v\n", *mode, err)
		if code == 0 {
			code = 2
		}
	}
	os.Exit(code)
}
