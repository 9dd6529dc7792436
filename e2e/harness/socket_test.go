package harness

import (
	"net"
	"os"
	"testing"
)

// TestDialedBy: the accepted end of a connection this process dialed is
// known as this process's, and not as another's.
func TestDialedBy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dialed, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer dialed.Close()
	accepted, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer accepted.Close()
	for _, tc := range []struct {
		name string
		pid  int
		want bool
	}{
		{"this process", os.Getpid(), true},
		{"init", 1, false},
		{"no such process", -1, false},
	} {
		if got := dialedBy(tc.pid, accepted); got != tc.want {
			t.Errorf("%s: dialedBy(%d) = %v, want %v", tc.name, tc.pid, got, tc.want)
		}
	}
}
