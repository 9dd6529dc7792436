// Command metrics is a worker that takes a mutex in turns with its peers
// and serves konlease's Prometheus metrics on /metrics, with the Events of
// its holds recorded on the mutex's Lease.
//
//	go run ./examples/metrics --name shared-work --listen 127.0.0.1:9100
//	curl -s 127.0.0.1:9100/metrics | grep konlease_
//
// It runs until SIGINT or SIGTERM, or for --rounds rounds. Exit codes follow
// koncli's: 0 done, 1 error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/konlease/konlease/examples/internal/kubeflags"
	"github.com/konlease/konlease/lock"
	"github.com/konlease/konlease/lock/lockmetrics"
)

func main() {
	os.Exit(run())
}

func run() int {
	kf := kubeflags.Register(flag.CommandLine, "shared-work")
	listen := flag.String("listen", "127.0.0.1:9100", "address to serve /metrics on")
	rounds := flag.Int("rounds", 0, "rounds of work before exiting (0: until interrupted)")
	work := flag.Duration("work", 200*time.Millisecond, "how long each round holds the mutex")
	flag.Parse()

	cfg, ns, err := kf.Connect()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The registry: konlease's metrics next to the process's own.
	reg := prometheus.NewRegistry()
	rec := lockmetrics.New()
	reg.MustRegister(rec, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	fmt.Printf("serving metrics on http://%s/metrics\n", ln.Addr())

	c, err := lock.NewForConfig(cfg, lock.WithLogger(kf.Logger()), lock.WithMetrics(rec), lock.WithEvents())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close(context.WithoutCancel(ctx)) // flushes the events
	m, err := c.NewMutex(ns, kf.Name, lock.WithTTL(15*time.Second))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for i := 0; *rounds == 0 || i < *rounds; i++ {
		var token int64
		err := m.With(ctx, func(ctx context.Context) error {
			token = m.Token()
			select {
			case <-time.After(*work):
			case <-ctx.Done():
			}
			return nil
		})
		switch {
		case errors.Is(err, context.Canceled):
			return 0
		case err != nil:
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Printf("round %d done (token %d)\n", i+1, token)
	}
	return 0
}
