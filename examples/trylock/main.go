// Command trylock makes a single attempt at a mutex and skips the work when
// someone else holds it: the pattern of a periodic job that must not run
// twice at once.
//
//	go run ./examples/trylock --name daily-job
//
// Exit codes follow koncli's: 0 done, 1 error, 3 held by someone else
// (the holder is printed), 4 the lock was lost during the work.
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
	kf := kubeflags.Register(flag.CommandLine, "daily-job")
	ttl := flag.Duration("ttl", time.Minute, "TTL given to the mutex if this creates it")
	work := flag.Duration("work", time.Second, "how long the pretend job takes")
	flag.Parse()

	cfg, ns, err := kf.Connect()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

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

	// TryLock never waits: either the mutex is ours now, or the error says
	// who has it.
	err = m.TryLock(ctx)
	var locked *lock.LockedError
	if errors.As(err, &locked) {
		fmt.Printf("%s/%s is held by %s since %s (token %d); skipping\n",
			ns, kf.Name, locked.Holder, locked.LockedAt.Format(time.RFC3339), locked.Token)
		return 3
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := m.Unlock(uctx); err != nil && m.Err() == nil {
			fmt.Fprintln(os.Stderr, "unlock:", err)
		}
	}()

	fmt.Printf("locked %s/%s as %s, fencing token %d; running the job\n", ns, kf.Name, m.Holder(), m.Token())
	select {
	case <-time.After(*work):
	case <-m.Done():
		fmt.Fprintln(os.Stderr, "lock lost:", m.Err())
		return 4
	case <-ctx.Done():
		fmt.Fprintln(os.Stderr, "interrupted; unlocking")
		return 1
	}
	fmt.Println("job done")
	return 0
}
