package harness

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"k8s.io/client-go/rest"
)

// Proxy is a TCP proxy on loopback in front of a server (kube-apiserver),
// through which tests cut clients off at chosen moments. TLS passes through
// untouched: the serving certificate covers 127.0.0.1, where the proxy
// listens, so clients verify it as usual.
//
// The faults it makes:
//   - Drop closes every open connection (watches end, requests in flight
//     fail with a reset or EOF);
//   - Stall holds all traffic for a while (requests time out, renewals come
//     late);
//   - Refuse closes the listener, so that new connections are refused, as
//     when the API server is down; Accept listens again on the same port;
//   - Cut closes the connections of chosen clients and turns away their new
//     ones until Uncut (a network partition of one etcd member's peer links).
type Proxy struct {
	addr   string
	target string

	mu         sync.Mutex
	ln         net.Listener // nil while refusing
	conns      map[net.Conn]struct{}
	clients    map[net.Conn]struct{} // the client sides among conns
	cut        func(client net.Conn) bool
	stallUntil time.Time
	closed     bool
	serving    sync.WaitGroup
}

// NewProxy starts a proxy on a free loopback port that forwards to target
// (host:port).
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("harness: proxy listen: %w", err)
	}
	p := &Proxy{addr: ln.Addr().String(), target: target, conns: map[net.Conn]struct{}{}, clients: map[net.Conn]struct{}{}}
	p.serve(ln)
	return p, nil
}

// NewProxy starts a proxy in front of the local API server.
func (e *Env) NewProxy() (*Proxy, error) {
	u, err := url.Parse(e.admin.Host)
	if err != nil {
		return nil, fmt.Errorf("harness: API server URL %q: %w", e.admin.Host, err)
	}
	return NewProxy(u.Host)
}

// Addr is the proxy's host:port; it stays the same across Refuse and
// Accept.
func (p *Proxy) Addr() string { return p.addr }

// Config returns a copy of cfg that reaches its server through the proxy.
func (p *Proxy) Config(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Host = "https://" + p.addr
	return cfg
}

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.serving.Add(1)
	go func() {
		defer p.serving.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.handle(c)
		}
	}()
}

// track records a new connection pair; false if the proxy is closed or the
// client is cut off.
func (p *Proxy) track(client, server net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || (p.cut != nil && p.cut(client)) {
		return false
	}
	p.conns[client], p.conns[server], p.clients[client] = struct{}{}, struct{}{}, struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.clients, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *Proxy) handle(client net.Conn) {
	p.gate()
	server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		_ = client.Close()
		return
	}
	if !p.track(client, server) {
		_ = client.Close()
		_ = server.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(server, client) }()
	go func() { defer wg.Done(); p.pipe(client, server) }()
	wg.Wait()
	p.untrack(client)
	p.untrack(server)
}

// pipe copies src to dst, holding every chunk while traffic is stalled.
func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.gate()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil { // io.EOF included: the peer closed
			break
		}
	}
	// Closing both ends makes the other direction's Read return too.
	_ = dst.Close()
	_ = src.Close()
}

// gate returns when traffic is not stalled. It is the proxy's own pacing,
// not a test's synchronisation.
func (p *Proxy) gate() {
	for {
		p.mu.Lock()
		d := time.Until(p.stallUntil)
		p.mu.Unlock()
		if d <= 0 {
			return
		}
		time.Sleep(d)
	}
}

// Stall holds all traffic, in both directions and for new connections, for
// d; Stall(0) ends a stall.
func (p *Proxy) Stall(d time.Duration) {
	p.mu.Lock()
	p.stallUntil = time.Now().Add(d)
	p.mu.Unlock()
}

// Drop closes every open connection; it returns how many client and server
// sides it closed.
func (p *Proxy) Drop() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.conns)
	for c := range p.conns {
		_ = c.Close()
	}
	return n
}

// Cut closes the open connections whose client side match selects and turns
// away new ones that it selects, until Uncut. match runs under the proxy's
// lock, once per connection.
func (p *Proxy) Cut(match func(client net.Conn) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = match
	n := 0
	for c := range p.clients {
		if match(c) {
			// The handler's pipes end and untrack both sides.
			_ = c.Close()
			n++
		}
	}
	return n
}

// Uncut lets every client connect again after Cut.
func (p *Proxy) Uncut() {
	p.mu.Lock()
	p.cut = nil
	p.mu.Unlock()
}

// Refuse stops listening and drops every open connection: until Accept,
// every connection attempt is refused (ECONNREFUSED), as when the API
// server is down.
func (p *Proxy) Refuse() {
	p.mu.Lock()
	ln := p.ln
	p.ln = nil
	p.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
		p.serving.Wait()
	}
	p.Drop()
}

// Accept listens again, on the same address, after Refuse.
func (p *Proxy) Accept() error {
	p.mu.Lock()
	refusing, closed := p.ln == nil, p.closed
	p.mu.Unlock()
	if closed {
		return errors.New("harness: proxy is closed")
	}
	if !refusing {
		return nil
	}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("harness: proxy listen again on %s: %w", p.addr, err)
	}
	p.serve(ln)
	return nil
}

// Close stops accepting and drops every connection.
func (p *Proxy) Close() {
	p.Refuse()
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.Drop()
}
