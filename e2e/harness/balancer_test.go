package harness

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"
)

// backend is a TCP server that answers each connection with its index and
// then keeps it open until the client closes it.
type backend struct {
	ln   net.Listener
	done chan struct{}
}

func startBackend(t *testing.T, i int) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := io.WriteString(c, strconv.Itoa(i)+"\n"); err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	t.Cleanup(b.stop)
	return b
}

// stop closes the listener: connection attempts are then refused.
func (b *backend) stop() {
	_ = b.ln.Close()
	<-b.done
}

// connect opens a connection through the balancer and returns it with the
// index of the backend that answered.
func connect(t *testing.T, bal *Balancer) (net.Conn, int) {
	t.Helper()
	c, err := net.Dial("tcp", bal.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return c, -1 // closed by the balancer: no backend
	}
	i, err := strconv.Atoi(line[:len(line)-1])
	if err != nil {
		t.Fatalf("backend answered %q", line)
	}
	return c, i
}

// closedByPeer reports whether the balancer closed c: a read ends with
// EOF or a reset, rather than data or the deadline, which bounds the wait
// of a test that fails.
func closedByPeer(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func TestBalancer(t *testing.T) {
	tests := []struct {
		name string
		// run gets the balancer and its three backends and returns the
		// backends that answered the connections it made, in order.
		run  func(t *testing.T, bal *Balancer, bs []*backend) []int
		want []int
	}{
		{
			name: "round-robin",
			run: func(t *testing.T, bal *Balancer, _ []*backend) []int {
				var got []int
				for range 6 {
					_, i := connect(t, bal)
					got = append(got, i)
				}
				return got
			},
			want: []int{0, 1, 2, 0, 1, 2},
		},
		{
			name: "a backend that refuses is skipped",
			run: func(t *testing.T, bal *Balancer, bs []*backend) []int {
				bs[1].stop()
				var got []int
				for range 4 {
					_, i := connect(t, bal)
					got = append(got, i)
				}
				return got
			},
			want: []int{0, 2, 2, 0},
		},
		{
			name: "no backend up: the connection is closed",
			run: func(t *testing.T, bal *Balancer, bs []*backend) []int {
				for _, b := range bs {
					b.stop()
				}
				_, i := connect(t, bal)
				return []int{i}
			},
			want: []int{-1},
		},
		{
			name: "disable moves a backend's connections to the others",
			run: func(t *testing.T, bal *Balancer, _ []*backend) []int {
				c0, _ := connect(t, bal)
				c1, _ := connect(t, bal)
				if n := bal.Disable(0); n != 1 {
					t.Errorf("Disable(0) closed %d connections, want 1", n)
				}
				if !closedByPeer(c0) {
					t.Error("the connection to backend 0 is still open")
				}
				if got := bal.Conns(); got[0] != 0 || got[1] != 1 {
					t.Errorf("Conns() = %v after Disable(0), want [0 1 0]", got)
				}
				_ = c1
				var got []int
				// Next in turn: 2, then 0, which is disabled, so 1, then 1;
				// once enabled again, 2, then 0.
				for range 3 {
					_, i := connect(t, bal)
					got = append(got, i)
				}
				bal.Enable(0)
				for range 2 {
					_, i := connect(t, bal)
					got = append(got, i)
				}
				return got
			},
			want: []int{2, 1, 1, 2, 0},
		},
		{
			name: "drop closes every connection",
			run: func(t *testing.T, bal *Balancer, _ []*backend) []int {
				var cs []net.Conn
				for range 3 {
					c, _ := connect(t, bal)
					cs = append(cs, c)
				}
				if n := bal.Drop(); n != 3 {
					t.Errorf("Drop() = %d, want 3", n)
				}
				for k, c := range cs {
					if !closedByPeer(c) {
						t.Errorf("connection %d still open after Drop", k)
					}
				}
				_, i := connect(t, bal)
				return []int{i}
			},
			want: []int{0},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var bs []*backend
			var addrs []string
			for i := range 3 {
				b := startBackend(t, i)
				bs = append(bs, b)
				addrs = append(addrs, b.ln.Addr().String())
			}
			bal, err := NewBalancer(addrs...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(bal.Close)
			got := tc.run(t, bal, bs)
			if len(got) != len(tc.want) {
				t.Fatalf("backends %v, want %v", got, tc.want)
			}
			for k := range got {
				if got[k] != tc.want[k] {
					t.Fatalf("backends %v, want %v", got, tc.want)
				}
			}
		})
	}
}
