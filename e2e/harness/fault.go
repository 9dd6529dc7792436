package harness

import (
	"context"
	"fmt"
)

// Fault control. Each component keeps its ports, flags and data across a stop
// and start, so clients built from Config reconnect to the same cluster.
// These calls replace processes under the Env's lock; tests that use them
// must not share the Env with tests running in parallel.

// In the HA topology, the calls below that name no member act on the whole
// tier (every kube-apiserver, every etcd member): a full outage of it.
// Those of ha.go act on one.

// StopAPIServer stops kube-apiserver: SIGTERM, then SIGKILL after
// Options.StopGrace or when ctx ends.
func (e *Env) StopAPIServer(ctx context.Context) error {
	return e.control("stop kube-apiserver", func() error {
		return e.eachAPIServerLocked(func(p *process) error { return p.stop(ctx, e.stopGrace) })
	})
}

// StartAPIServer starts a stopped kube-apiserver and waits until it is ready.
// It needs etcd to be running to become ready.
func (e *Env) StartAPIServer(ctx context.Context) error {
	return e.control("start kube-apiserver", func() error {
		if e.ha == nil {
			return e.startAPIServerLocked(ctx)
		}
		for i, a := range e.ha.APIServers {
			if !a.Proc.running() {
				if err := e.startHAAPIServerLocked(ctx, i); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// KillAPIServer crashes kube-apiserver with SIGKILL: no graceful shutdown,
// open connections are reset.
func (e *Env) KillAPIServer(ctx context.Context) error {
	return e.control("kill kube-apiserver", func() error {
		return e.eachAPIServerLocked(func(p *process) error { return p.kill(ctx) })
	})
}

// eachAPIServerLocked calls fn on kube-apiserver, or on each of the HA
// topology's.
func (e *Env) eachAPIServerLocked(fn func(*process) error) error {
	if e.ha == nil {
		return fn(e.apiserver)
	}
	for _, a := range e.ha.APIServers {
		if err := fn(a.Proc); err != nil {
			return err
		}
	}
	return nil
}

// eachEtcdLocked calls fn on etcd, or on each member of the HA topology's
// cluster.
func (e *Env) eachEtcdLocked(fn func(*process) error) error {
	if e.ha == nil {
		return fn(e.etcd)
	}
	for _, m := range e.ha.Members {
		if err := fn(m.Proc); err != nil {
			return err
		}
	}
	return nil
}

// RestartAPIServer stops and starts kube-apiserver.
func (e *Env) RestartAPIServer(ctx context.Context) error {
	if err := e.StopAPIServer(ctx); err != nil {
		return err
	}
	return e.StartAPIServer(ctx)
}

// StopEtcd stops etcd; kube-apiserver keeps running and fails requests that
// need storage.
func (e *Env) StopEtcd(ctx context.Context) error {
	return e.control("stop etcd", func() error {
		return e.eachEtcdLocked(func(p *process) error { return p.stop(ctx, e.stopGrace) })
	})
}

// StartEtcd starts a stopped etcd on its old data and waits until it is
// healthy and, if kube-apiserver is running, until kube-apiserver is ready
// again, so that the next request through the API can succeed.
func (e *Env) StartEtcd(ctx context.Context) error {
	return e.control("start etcd", func() error {
		if e.ha != nil {
			return e.startEtcdHALocked(ctx)
		}
		if err := e.startEtcdLocked(ctx); err != nil {
			return err
		}
		if !e.apiserver.running() {
			return nil
		}
		return e.waitAPIServerLocked(ctx)
	})
}

// KillEtcd crashes etcd with SIGKILL. etcd's graceful stop waits several
// seconds for the API server's watch streams; a kill does not.
func (e *Env) KillEtcd(ctx context.Context) error {
	return e.control("kill etcd", func() error {
		return e.eachEtcdLocked(func(p *process) error { return p.kill(ctx) })
	})
}

// RestartEtcd stops and starts etcd.
func (e *Env) RestartEtcd(ctx context.Context) error {
	if err := e.StopEtcd(ctx); err != nil {
		return err
	}
	return e.StartEtcd(ctx)
}

// control runs fn, a change to a local process, under the Env's lock; on
// an external cluster it fails with ErrExternal.
func (e *Env) control(op string, fn func() error) error {
	if !e.local {
		return fmt.Errorf("%s: %w", op, ErrExternal)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return fn()
}
