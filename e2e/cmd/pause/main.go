// Command pause is the sandbox ("pause") container of the local node's pods:
// it holds the pod's namespaces and waits to be told to stop. No image can
// be pulled here, so the node runs this instead of registry.k8s.io/pause.
// As the PID 1 of its container it gets no default signal handling, hence
// the explicit handler.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
