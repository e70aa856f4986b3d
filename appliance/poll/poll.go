// Package poll waits in tests for something that normally happens at once
// but, on a loaded machine, can take seconds: tests must never depend on
// real time being fast.
package poll

import (
	"testing"
	"time"
)

// Bound is how long Until waits before failing; it only bounds a failure,
// so it is generous.
const Bound = 30 * time.Second

// Until polls cond until it holds, or fails the test after Bound, saying
// what it waited for.
func Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
