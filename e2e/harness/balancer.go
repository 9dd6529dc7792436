package harness

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Balancer is a TCP load balancer on loopback in front of several API
// servers, as a cloud load balancer is: each new connection goes to the next
// backend in round-robin order that accepts it, so that one client's
// requests and its watches may be served by different API servers, and a
// client whose connection breaks may come back on another one. TLS passes
// through; the API servers share one serving certificate that covers
// 127.0.0.1.
//
// A backend is up when it accepts a connection: a crashed API server refuses
// at once on loopback, so no health check is needed for it. One that is
// starting accepts connections before it is ready; the harness disables it
// (Disable) until it is, as a health check would.
type Balancer struct {
	addr     string
	backends []string
	// dialTimeout bounds one attempt to reach a backend.
	dialTimeout time.Duration

	mu       sync.Mutex
	ln       net.Listener
	disabled []bool
	next     int
	// conns maps each open client connection to its backend's index and
	// the connection to that backend.
	conns   map[net.Conn]balanced
	closed  bool
	serving sync.WaitGroup
}

type balanced struct {
	backend int
	server  net.Conn
}

// errNoBackend: no backend accepted a connection.
var errNoBackend = errors.New("harness: no backend accepts connections")

// NewBalancer starts a balancer on a free loopback port in front of the
// backends (host:port each).
func NewBalancer(backends ...string) (*Balancer, error) {
	return NewBalancerOn("127.0.0.1:0", backends...)
}

// NewBalancerOn starts a balancer listening on addr (host:port).
func NewBalancerOn(addr string, backends ...string) (*Balancer, error) {
	if len(backends) == 0 {
		return nil, errors.New("harness: balancer without backends")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("harness: balancer listen: %w", err)
	}
	b := &Balancer{
		addr:        ln.Addr().String(),
		backends:    append([]string(nil), backends...),
		dialTimeout: 2 * time.Second,
		ln:          ln,
		disabled:    make([]bool, len(backends)),
		conns:       map[net.Conn]balanced{},
	}
	b.serving.Add(1)
	go func() {
		defer b.serving.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.serving.Add(1)
			go func() { defer b.serving.Done(); b.handle(c) }()
		}
	}()
	return b, nil
}

// Addr is the balancer's host:port.
func (b *Balancer) Addr() string { return b.addr }

// Backends is the number of backends.
func (b *Balancer) Backends() int { return len(b.backends) }

// dial connects to the next backend in round-robin order that is enabled
// and accepts, trying each at most once.
func (b *Balancer) dial() (int, net.Conn, error) {
	b.mu.Lock()
	start := b.next
	b.next = (b.next + 1) % len(b.backends)
	b.mu.Unlock()
	for k := range len(b.backends) {
		i := (start + k) % len(b.backends)
		b.mu.Lock()
		off := b.disabled[i]
		b.mu.Unlock()
		if off {
			continue
		}
		c, err := net.DialTimeout("tcp", b.backends[i], b.dialTimeout)
		if err == nil {
			return i, c, nil
		}
	}
	return 0, nil, errNoBackend
}

func (b *Balancer) handle(client net.Conn) {
	i, server, err := b.dial()
	if err != nil {
		_ = client.Close()
		return
	}
	b.mu.Lock()
	// A backend disabled while it was dialled gets no connection.
	if b.closed || b.disabled[i] {
		b.mu.Unlock()
		_ = client.Close()
		_ = server.Close()
		return
	}
	b.conns[client] = balanced{backend: i, server: server}
	b.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); splice(server, client) }()
	go func() { defer wg.Done(); splice(client, server) }()
	wg.Wait()
	b.mu.Lock()
	delete(b.conns, client)
	b.mu.Unlock()
}

// splice copies src to dst until either ends, then closes both, so that the
// other direction's copy ends too.
func splice(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	_ = dst.Close()
	_ = src.Close()
}

// closeLocked closes the open connections to the backends that match
// selects and returns how many.
func (b *Balancer) closeLocked(match func(backend int) bool) int {
	n := 0
	for c, bc := range b.conns {
		if match(bc.backend) {
			_ = c.Close()
			_ = bc.server.Close()
			// Gone now, though its handler notices only later.
			delete(b.conns, c)
			n++
		}
	}
	return n
}

// Drop closes every open connection; clients that reconnect are spread
// round-robin again. It returns how many client connections it closed.
func (b *Balancer) Drop() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closeLocked(func(int) bool { return true })
}

// Disable stops sending new connections to backend i and closes its open
// ones, so that its clients move to another backend (as when a load
// balancer drains a server, or its health check fails). It returns how
// many client connections it closed.
func (b *Balancer) Disable(i int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.disabled[i] = true
	return b.closeLocked(func(k int) bool { return k == i })
}

// Enable sends new connections to backend i again.
func (b *Balancer) Enable(i int) {
	b.mu.Lock()
	b.disabled[i] = false
	b.mu.Unlock()
}

// Conns returns the number of open client connections per backend.
func (b *Balancer) Conns() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]int, len(b.backends))
	for _, bc := range b.conns {
		out[bc.backend]++
	}
	return out
}

// Close stops listening, closes every connection and waits for the
// balancer's goroutines to end.
func (b *Balancer) Close() {
	b.mu.Lock()
	b.closed = true
	b.closeLocked(func(int) bool { return true })
	b.mu.Unlock()
	_ = b.ln.Close()
	b.serving.Wait()
}
