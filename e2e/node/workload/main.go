// Command workload is the node tests' stand-in for the commands that the
// example manifests run under a mutex or a semaphore: ./migrate in
// examples/db-migration/job.yaml, run-daily-job in
// examples/cronjob/cronjob.yaml and maintain-node in
// examples/daemonset/daemonset.yaml (the test image has it under all
// three names).
// It logs its critical section in the Lease "record-NAME" of its namespace
// (package e2e/node/record), which the test created, and stays inside as
// the record says. It talks to the API server with the pod's in-cluster
// configuration, as the pod's ServiceAccount.
//
// Exit codes: 0 done; 1 error or a violation recorded; 128+N stopped by
// signal N (SIGTERM from koncli when the pod is deleted), after recording
// it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/konlease/konlease/e2e/node/record"
)

// namespaceFile is where the pod's ServiceAccount volume has its namespace.
const namespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

const pollInterval = 200 * time.Millisecond

func main() {
	os.Exit(run())
}

func run() int {
	prog := filepath.Base(os.Args[0])
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s: "+format+"\n", append([]any{prog}, args...)...)
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		logf("in-cluster configuration: %v", err)
		return 1
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		logf("client: %v", err)
		return 1
	}
	ns, err := os.ReadFile(namespaceFile)
	if err != nil {
		logf("namespace: %v", err)
		return 1
	}
	namespace, name := strings.TrimSpace(string(ns)), record.LeaseName(prog)
	pod, _ := os.Hostname()
	me := record.Entry{Pod: pod, Holder: os.Getenv("KONLEASE_HOLDER"), Entered: time.Now().UTC()}
	if v := os.Getenv("KONLEASE_TOKEN"); v != "" {
		if me.Token, err = strconv.ParseInt(v, 10, 64); err != nil {
			logf("KONLEASE_TOKEN %q: %v", v, err)
			return 1
		}
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	// Recording goes on after a signal: the exit must be logged.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	var rec record.Record
	err = record.Update(ctx, client, namespace, name, func(r *record.Record) error {
		r.Enter(me)
		rec = *r
		return nil
	})
	if err != nil {
		logf("enter: %v", err)
		return 1
	}
	fmt.Printf("%s entered %s/%s as %s, token %d\n", pod, namespace, name, me.Holder, me.Token)
	violated := len(rec.Violations) > 0

	outcome, code := "ok", 0
	select {
	case sig := <-sigs:
		outcome, code = "signal: "+sig.String(), 128+int(sig.(syscall.Signal))
	case <-held(ctx, client, namespace, name, rec, logf):
	}
	err = record.Update(ctx, client, namespace, name, func(r *record.Record) error {
		r.Exit(me, outcome, time.Now().UTC())
		return nil
	})
	if err != nil {
		logf("exit: %v", err)
		return 1
	}
	fmt.Printf("%s exited: %s\n", pod, outcome)
	if violated && code == 0 {
		logf("violation recorded: %s", strings.Join(rec.Violations, "; "))
		return 1
	}
	return code
}

// held closes when the holder has stayed inside as long as the record asks.
func held(ctx context.Context, c kubernetes.Interface, namespace, name string, r record.Record, logf func(string, ...any)) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if !r.UntilReleased {
			select {
			case <-time.After(r.Hold.Duration):
			case <-ctx.Done():
			}
			return
		}
		for {
			cur, err := record.Get(ctx, c, namespace, name)
			switch {
			case err != nil:
				logf("waiting for release: %v", err)
			case cur.Released:
				return
			}
			select {
			case <-time.After(pollInterval):
			case <-ctx.Done():
				return
			}
		}
	}()
	return done
}
