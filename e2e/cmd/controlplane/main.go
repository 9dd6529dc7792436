// Command controlplane runs a local etcd and kube-apiserver in the
// background for trying konlease by hand (make up / make down).
//
//	controlplane up          start, detached; prints export KUBECONFIG=...
//	controlplane up --node   also a node that runs pods (make up NODE=1;
//	                         root only), with the image archives of
//	                         bin/images imported
//	controlplane up --ha     the HA topology instead (make up HA=1): three
//	                         etcd members, two kube-apiservers and a
//	                         round-robin balancer in front of them, run
//	                         by this command as "balancer" (internal)
//	controlplane status      show the processes; exit 1 if they run but the API is not ready
//	controlplane down        stop the processes and remove the state
//
// State (pids, logs, etcd data, certificates, the admin kubeconfig) lives in
// <repo root>/.controlplane. Process handling is package harness's, so `up`
// starts exactly what the e2e tests start.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/konlease/konlease/e2e/harness"
)

const usage = "usage: controlplane up [--node | --ha] | status | down"

func main() {
	log.SetFlags(0)
	log.SetPrefix("controlplane: ")
	if len(os.Args) > 1 && os.Args[1] == "balancer" {
		if err := balance(os.Args[2:]); err != nil {
			log.Fatal(err)
		}
		return
	}
	withNode := len(os.Args) == 3 && os.Args[1] == "up" && os.Args[2] == "--node"
	withHA := len(os.Args) == 3 && os.Args[1] == "up" && os.Args[2] == "--ha"
	if len(os.Args) != 2 && !withNode && !withHA {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	root, err := harness.RepoRoot()
	if err != nil {
		log.Fatal(err)
	}
	dir := filepath.Join(root, ".controlplane")
	// Ctrl-C during `up` aborts the start; Start then stops what it started.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	switch os.Args[1] {
	case "up":
		err = up(ctx, dir, withNode, withHA)
	case "down":
		err = down(dir)
	case "status":
		err = status(ctx, dir, os.Stdout)
	default:
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

// opts logs progress to stderr: stdout carries only the export line, so that
// `eval "$(make -s up)"` works.
var opts = harness.Options{Logf: log.Printf}

func up(ctx context.Context, dir string, withNode, withHA bool) error {
	exists, err := harness.StateExists(dir)
	if err != nil {
		return err
	}
	if exists {
		env, err := harness.Attach(dir, opts)
		if err != nil {
			return fmt.Errorf("%w; check that no etcd or kube-apiserver of %s runs, then remove it", err, dir)
		}
		if allRunning(env) && ready(ctx, env) == nil {
			log.Printf("already running (%s)", dir)
			printExport(env)
			return nil
		}
		log.Printf("stopping a partly running control plane left in %s", dir)
		if err := env.Stop(); err != nil {
			return err
		}
	}
	o := opts
	o.Dir, o.Detach = dir, true
	if withNode {
		// Every archive of make node and make image, so that pods can
		// use the koncli image and the test images at once.
		images, err := filepath.Glob(filepath.Join(root(dir), "bin", "images", "*.tar"))
		if err != nil {
			return err
		}
		o.Node = &harness.NodeOptions{Images: images}
	}
	if withHA {
		// The balancer outlives this command, so it is a process: this
		// command's own binary, as "balancer".
		self, err := os.Executable()
		if err != nil {
			return err
		}
		o.HA = &harness.HAOptions{BalancerCommand: []string{self, "balancer"}}
	}
	env, err := harness.Start(ctx, o)
	if err != nil {
		return err
	}
	printExport(env)
	return nil
}

// balance runs the HA topology's balancer until SIGTERM (see up --ha).
func balance(args []string) error {
	fs := flag.NewFlagSet("balancer", flag.ContinueOnError)
	listen := fs.String("listen", "", "host:port to listen on")
	var backends []string
	fs.Func("backend", "a kube-apiserver's host:port (repeated)", func(s string) error {
		backends = append(backends, s)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := harness.NewBalancerOn(*listen, backends...)
	if err != nil {
		return err
	}
	defer b.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Printf("balancer on %s in front of %v", b.Addr(), backends)
	<-ctx.Done()
	return nil
}

// root is the repository root that holds dir (.controlplane).
func root(dir string) string { return filepath.Dir(dir) }

func down(dir string) error {
	exists, err := harness.StateExists(dir)
	if err != nil {
		return err
	}
	if !exists {
		log.Printf("no control plane in %s", dir)
		return nil
	}
	env, err := harness.Attach(dir, opts)
	if err != nil {
		return err
	}
	if err := env.Stop(); err != nil {
		return err
	}
	log.Printf("stopped; removed %s", dir)
	return nil
}

// status reports on the control plane in dir to w. Nothing running is an
// answer, not a failure (make would print "Error 1" after it); one that
// runs but does not answer is.
func status(ctx context.Context, dir string, w io.Writer) error {
	exists, err := harness.StateExists(dir)
	if err != nil {
		return err
	}
	if !exists {
		_, err := fmt.Fprintln(w, `No control plane is running. Start one with: eval "$(make -s up)"`)
		return err
	}
	env, err := harness.Attach(dir, opts)
	if err != nil {
		return err
	}
	for _, c := range env.Components() {
		state := "stopped"
		if c.Running {
			state = fmt.Sprintf("running, pid %d", c.PID)
		}
		fmt.Fprintf(w, "%-15s %s (log %s)\n", c.Name, state, c.LogPath)
	}
	if err := ready(ctx, env); err != nil {
		return fmt.Errorf("API not ready: %w", err)
	}
	fmt.Fprintf(w, "%-15s ready at %s\n", "API", env.Config().Host)
	printExport(env)
	return nil
}

func allRunning(env *harness.Env) bool {
	for _, c := range env.Components() {
		if !c.Running {
			return false
		}
	}
	return true
}

func ready(ctx context.Context, env *harness.Env) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return env.Ready(ctx)
}

func printExport(env *harness.Env) {
	fmt.Printf("export KUBECONFIG=%s\n", env.AdminKubeconfig())
}
