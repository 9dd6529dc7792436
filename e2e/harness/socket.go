package harness

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// dialedBy reports whether process pid holds the other end of c, a TCP
// connection accepted on loopback: whether the socket bound to c's remote
// address and connected to c's local address is one of pid's open files.
// A partition needs it because every etcd member dials its peers from
// 127.0.0.1: only the kernel's socket table tells whose connection it is.
func dialedBy(pid int, c net.Conn) bool {
	inode := socketInode(c.RemoteAddr(), c.LocalAddr())
	if inode == "" {
		return false
	}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	want := "socket:[" + inode + "]"
	for _, fd := range fds {
		if link, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && link == want {
			return true
		}
	}
	return false
}

// socketInode returns the inode of the IPv4 TCP socket from local to
// remote, from /proc/net/tcp; "" if there is none.
func socketInode(local, remote net.Addr) string {
	l, lok := local.(*net.TCPAddr)
	r, rok := remote.(*net.TCPAddr)
	if !lok || !rok {
		return ""
	}
	wantLocal, wantRemote := procNetAddr(l), procNetAddr(r)
	if wantLocal == "" || wantRemote == "" {
		return ""
	}
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		fields := strings.Fields(sc.Text())
		if len(fields) > 9 && fields[1] == wantLocal && fields[2] == wantRemote {
			return fields[9]
		}
	}
	return ""
}

// procNetAddr writes an IPv4 address as /proc/net/tcp does: the four bytes
// as one little-endian hex word, then the port in hex.
func procNetAddr(a *net.TCPAddr) string {
	ip := a.IP.To4()
	if ip == nil {
		return ""
	}
	return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], a.Port)
}
