// Command lock shows the basic pattern of package lock: wait for a mutex
// (up to a timeout), do some work while holding it, release it.
//
//	go run ./examples/lock --name db-migration --timeout 1m
//
// Exit codes follow koncli's: 0 done, 1 error, 3 not acquired within
// --timeout, 4 the lock was lost during the work.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/konlease/konlease/examples/internal/kubeflags"
	"github.com/konlease/konlease/lock"
)

func main() {
	os.Exit(run())
}

func run() int {
	kf := kubeflags.Register(flag.CommandLine, "example")
	timeout := flag.Duration("timeout", 30*time.Second, "how long to wait for the mutex")
	ttl := flag.Duration("ttl", 30*time.Second, "TTL given to the mutex if this creates it: how soon others may take over if this process dies")
	work := flag.Duration("work", 2*time.Second, "how long the pretend work takes")
	flag.Parse()

	cfg, ns, err := kf.Connect()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// SIGTERM is what a pod gets when it is deleted: it ends the wait or the
	// work like Ctrl-C does, and the deferred Unlock below still runs.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// One Client per process; it is safe for concurrent use.
	c, err := lock.NewForConfig(cfg, lock.WithLogger(kf.Logger()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The holder identity defaults to the host name (the pod name in a pod)
	// plus a random suffix; lock.WithHolder sets it explicitly.
	m, err := c.NewMutex(ns, kf.Name, lock.WithTTL(*ttl))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	// A deadline on the context is the lock timeout.
	lctx, cancel := context.WithTimeout(ctx, *timeout)
	err = m.Lock(lctx)
	cancel()
	if err != nil && ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "interrupted while waiting:", err)
		return 1
	}
	if errors.Is(err, lock.ErrLocked) {
		// A *LockedError names the holder that kept us out.
		fmt.Fprintf(os.Stderr, "not acquired within %s: %v\n", *timeout, err)
		return 3
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Unlock on every way out. ctx may be cancelled by then (Ctrl-C), so the
	// release gets a context of its own, still bounded.
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := m.Unlock(uctx); err != nil && m.Err() == nil {
			fmt.Fprintln(os.Stderr, "unlock:", err)
		}
	}()

	// The fencing token grows with every acquisition of this mutex; hand it
	// to anything that can refuse writes from an older holder.
	fmt.Printf("locked %s/%s as %s, fencing token %d\n", ns, kf.Name, m.Holder(), m.Token())

	// The pretend work. Real work should stop when m.Done() closes: the lock
	// was lost (force-unlocked, or renewals failed until the TTL ran out), and
	// from then on someone else may hold it.
	select {
	case <-time.After(*work):
	case <-m.Done():
		fmt.Fprintln(os.Stderr, "lock lost:", m.Err())
		return 4
	case <-ctx.Done():
		fmt.Fprintln(os.Stderr, "interrupted; unlocking")
		return 1
	}
	fmt.Printf("done; unlocking %s/%s\n", ns, kf.Name)
	return 0
}
