// Command with runs a function under a mutex with Mutex.With, which locks,
// runs the function and always unlocks, even on error or panic. The
// function's context is cancelled if the lock is lost, and the fencing token
// travels with the work.
//
//	go run ./examples/with --name shared-file --steps 5
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
	kf := kubeflags.Register(flag.CommandLine, "shared-file")
	timeout := flag.Duration("timeout", time.Minute, "bound on waiting and working together (0: none)")
	ttl := flag.Duration("ttl", 15*time.Second, "TTL given to the mutex if this creates it")
	steps := flag.Int("steps", 3, "number of pretend work steps")
	step := flag.Duration("step", 300*time.Millisecond, "duration of one step")
	flag.Parse()

	cfg, ns, err := kf.Connect()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// With uses one context for the wait and the work, so a deadline bounds
	// both. To bound only the wait, use Lock and Unlock (examples/lock).
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}

	c, err := lock.NewForConfig(cfg, lock.WithLogger(kf.Logger()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	m, err := c.NewMutex(ns, kf.Name, lock.WithTTL(*ttl))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	err = m.With(ctx, func(ctx context.Context) error {
		// The token of this hold. A store shared by several writers keeps
		// the largest token it has seen and refuses smaller ones, so a
		// holder that lost the lock without noticing (a long GC pause, a
		// frozen VM) cannot overwrite its successor's work.
		token := m.Token()
		fmt.Printf("holding %s/%s as %s, fencing token %d\n", ns, kf.Name, m.Holder(), token)
		for i := 1; i <= *steps; i++ {
			select {
			case <-time.After(*step):
				fmt.Printf("step %d/%d done under token %d\n", i, *steps, token)
			case <-ctx.Done():
				// Lost lock or interrupt: stop at once. With reports
				// ErrLost itself when the lock was lost.
				return fmt.Errorf("step %d/%d: %w", i, *steps, context.Cause(ctx))
			}
		}
		return nil
	})
	switch {
	case err == nil:
		fmt.Printf("done; %s/%s is unlocked\n", ns, kf.Name)
		return 0
	case errors.Is(err, lock.ErrLost):
		fmt.Fprintln(os.Stderr, "lock lost:", err)
		return 4
	case errors.Is(err, lock.ErrLocked) && !errors.Is(err, context.Canceled):
		fmt.Fprintln(os.Stderr, "not acquired:", err)
		return 3
	default:
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
}
