package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"syscall"
	"time"
)

type faultKind struct {
	name   string
	weight int
}

// The faults and their weights. In the HA topology "apiserver" and "etcd"
// crash the whole tier (every API server, every member).
var faultKinds = []faultKind{
	{"kill", 4}, {"sigstop", 3}, {"drop", 3}, {"stall", 3}, {"apiserver", 1}, {"etcd", 1},
}

// haFaultKinds are added in the HA topology (see hafaults.go).
var haFaultKinds = []faultKind{
	{"etcd-leader", 3}, {"etcd-follower", 3}, {"etcd-partition", 3}, {"apiserver-one", 4}, {"move", 4},
}

func (o *orchestrator) kinds() []faultKind {
	if o.topology == topologyHA {
		return append(append([]faultKind(nil), faultKinds...), haFaultKinds...)
	}
	return faultKinds
}

func (o *orchestrator) pick() string {
	kinds := o.kinds()
	total := 0
	for _, f := range kinds {
		total += f.weight
	}
	n := o.rng.IntN(total)
	for _, f := range kinds {
		if n < f.weight {
			return f.name
		}
		n -= f.weight
	}
	panic("unreachable")
}

// sleep waits d or until ctx ends; the fault schedule's only use of timers.
func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// faults injects faults until ctx ends, one at a time, each ended before the
// next begins, with a pause between them: 1 to 4 seconds, or in the HA
// topology 4 to 10, long enough to see most mutexes acquired again before
// the next fault (the liveness figure).
func (o *orchestrator) faults(ctx context.Context) {
	pause, spread := 1000, 3000
	if o.topology == topologyHA {
		pause, spread = 4000, 6000
	}
	for {
		sleep(ctx, time.Duration(pause+o.rng.IntN(spread))*time.Millisecond)
		if ctx.Err() != nil || o.noFaults {
			if o.noFaults {
				<-ctx.Done()
			}
			return
		}
		kind := o.pick()
		// Faults end on their own schedule even when the run ends meanwhile.
		fctx := context.WithoutCancel(ctx)
		r := record{Kind: "fault", Fault: kind, At: now()}
		var err error
		switch kind {
		case "kill":
			err = o.kill(fctx, &r)
		case "sigstop":
			err = o.sigstop(fctx, &r)
		case "drop":
			r.Holder = fmt.Sprintf("%d connections", o.proxy.Drop())
		case "stall":
			d := time.Duration(2000+o.rng.IntN(3000)) * time.Millisecond
			o.proxy.Stall(d)
			sleep(fctx, d)
		case "apiserver":
			if err = o.env.KillAPIServer(fctx); err == nil {
				err = o.env.StartAPIServer(fctx)
			}
		case "etcd":
			if err = o.env.KillEtcd(fctx); err == nil {
				err = o.env.StartEtcd(fctx)
			}
		default:
			err = o.haFault(fctx, kind, &r)
		}
		r.Until = now()
		if err != nil {
			r.Error = err.Error()
			o.logf("fault %s: %v", kind, err)
		}
		o.hist.add(r)
	}
}

// kill sends SIGKILL to a random worker's process group, frees a mutex
// without TTL that it held (nobody else ever would), and restarts it.
func (o *orchestrator) kill(ctx context.Context, r *record) error {
	p := o.workers[o.rng.IntN(len(o.workers))]
	r.Pid, r.Worker = p.cmd.Process.Pid, p.cfg.Name
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	if p.cfg.TTL == 0 && p.cfg.Kind != "nolock" {
		// koncli's command dies by its parent-death signal; give it a moment.
		sleep(ctx, 500*time.Millisecond)
		prefix := fmt.Sprintf("%s-%d-", p.cfg.Name, p.cmd.Process.Pid)
		err := retry(ctx, func(ctx context.Context) error {
			st, err := o.locks.Get(ctx, namespace, p.cfg.Mutex)
			if err != nil || !strings.HasPrefix(st.Holder, prefix) {
				return err
			}
			_, err = o.locks.ForceUnlock(ctx, namespace, p.cfg.Mutex)
			if err == nil {
				r.Holder = st.Holder + " force-unlocked"
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	return o.start(p)
}

// sigstop pauses the holder of a TTL mutex, if a library worker holds one,
// for longer than the TTL, then lets it run again: it must learn that it
// lost the lock, and the store must refuse its late writes.
func (o *orchestrator) sigstop(ctx context.Context, r *record) error {
	var cands []*workerProc
	for _, p := range o.workers {
		if p.cfg.TTL > 0 && (p.cfg.Kind == "with" || p.cfg.Kind == "lock") {
			cands = append(cands, p)
		}
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].cfg.Name < cands[j].cfg.Name })
	p := cands[o.rng.IntN(len(cands))]
	// Prefer a worker that holds its mutex right now.
	if st, err := o.locks.Get(ctx, namespace, p.cfg.Mutex); err == nil {
		for _, q := range cands {
			if q.cfg.Mutex == p.cfg.Mutex && strings.HasPrefix(st.Holder, fmt.Sprintf("%s-%d-", q.cfg.Name, q.cmd.Process.Pid)) {
				p = q
			}
		}
	}
	r.Pid, r.Worker = p.cmd.Process.Pid, p.cfg.Name
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	sleep(ctx, p.cfg.TTL+2*time.Second)
	return p.cmd.Process.Signal(syscall.SIGCONT)
}
