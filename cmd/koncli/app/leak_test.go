package app

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine running, but for
// the keeper of a hold that 'koncli mutex lock' (or 'semaphore acquire')
// leaves behind on purpose: the command's contract is to exit holding, and
// its keeper lives until the process exits, which an in-process test's
// process does not. It ends on its own once the test's API server is gone,
// but not always before the check (seen on a slow CI machine).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/konlease/konlease/lock.(*Mutex).keep"),
		goleak.IgnoreTopFunction("github.com/konlease/konlease/lock.(*Mutex).follow"),
		goleak.IgnoreAnyFunction("github.com/konlease/konlease/lock.(*Mutex).startKeeper.func3"),
	)
}
