// Command nodesandbox is the init process of the local node's sandbox (see
// package e2e/internal/sandbox). The harness starts it in new namespaces;
// it is not meant to be run by hand.
//
//	nodesandbox SPEC.json
package main

import (
	"fmt"
	"log"
	"os"

	"github.com/konlease/konlease/e2e/internal/sandbox"
)

func main() {
	logger := log.New(os.Stderr, "nodesandbox: ", log.Ltime|log.Lmicroseconds)
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: nodesandbox SPEC.json (started by the e2e harness)")
		os.Exit(2)
	}
	spec, err := sandbox.Read(os.Args[1])
	if err != nil {
		logger.Print(err)
		os.Exit(1)
	}
	if err := sandbox.Run(spec, logger); err != nil {
		logger.Print(err)
		os.Exit(1)
	}
}
