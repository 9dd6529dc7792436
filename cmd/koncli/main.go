// Command koncli gives shell scripts, Jobs and CronJobs distributed mutexes
// on native Kubernetes Lease objects. See 'koncli --help'.
package main

import "github.com/konlease/konlease/cmd/koncli/app"

func main() {
	app.Main()
}
