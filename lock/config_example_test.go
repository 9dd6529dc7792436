package lock_test

import (
	"context"
	"fmt"
	"log"

	"github.com/konlease/konlease/lock"
)

// New needs no configuration: the cluster and the namespace are found as
// kubectl finds them. This example talks to the cluster of your
// kubeconfig, so `go test` compiles it but does not run it (it has no
// Output comment); the e2e suite runs it, as a program, against a real API
// server (TestExampleNewRuns).
func ExampleNew() {
	ctx := context.Background()
	client, err := lock.New()
	if err != nil {
		log.Fatal(err)
	}

	// Lock; "" is the default namespace: the kubeconfig context's, else
	// the pod's, else "default".
	mutex, err := client.NewMutex("", "critical-section")
	if err != nil {
		log.Fatal(err)
	}
	if err := mutex.Lock(ctx); err != nil {
		log.Fatal(err)
	}

	// Critical section
	fmt.Printf("locked %s/%s with fencing token %d\n", mutex.Namespace(), mutex.Name(), mutex.Token())

	// Unlock
	if err := mutex.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
}
