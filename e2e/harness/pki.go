package harness

import (
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
)

// pki holds the files kube-apiserver needs for serving TLS, signing
// ServiceAccount tokens and authenticating the admin.
type pki struct {
	caFile, certFile, keyFile string
	saKeyFile                 string
	tokenFile                 string
	caPEM                     []byte
	adminToken                string
}

const (
	adminUser  = "konlease-admin"
	adminGroup = "system:masters" // bypasses RBAC: the harness itself must never be denied
)

// writePKI generates a throwaway CA, a serving certificate for the loopback
// addresses and extraIPs, an ECDSA ServiceAccount signing key and an admin
// token, all under dir.
func writePKI(dir string, extraIPs ...net.IP) (*pki, error) {
	certPEM, keyPEM, err := cert.GenerateSelfSignedCertKey("127.0.0.1",
		append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, extraIPs...), []string{"localhost"})
	if err != nil {
		return nil, fmt.Errorf("generate serving certificate: %w", err)
	}
	// certPEM is the serving certificate followed by the CA that signed it;
	// clients trust the CA only.
	certs, err := cert.ParseCertsPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("parse generated certificates: %w", err)
	}
	var caPEM []byte
	for _, c := range certs {
		if c.IsCA {
			if caPEM, err = cert.EncodeCertificates(c); err != nil {
				return nil, fmt.Errorf("encode CA certificate: %w", err)
			}
		}
	}
	if caPEM == nil {
		return nil, fmt.Errorf("generated certificate chain has no CA")
	}
	saKeyPEM, err := keyutil.MakeEllipticPrivateKeyPEM()
	if err != nil {
		return nil, fmt.Errorf("generate service account key: %w", err)
	}
	token := rand.Text() // 128 random bits
	p := &pki{
		caFile:     filepath.Join(dir, "ca.crt"),
		certFile:   filepath.Join(dir, "apiserver.crt"),
		keyFile:    filepath.Join(dir, "apiserver.key"),
		saKeyFile:  filepath.Join(dir, "sa.key"),
		tokenFile:  filepath.Join(dir, "tokens.csv"),
		caPEM:      caPEM,
		adminToken: token,
	}
	// Static token file format: token,user,uid,"group1,group2".
	tokens := fmt.Sprintf("%s,%s,%s,%q\n", token, adminUser, adminUser, adminGroup)
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{p.caFile, caPEM, 0o644},
		{p.certFile, certPEM, 0o644},
		{p.keyFile, keyPEM, 0o600},
		{p.saKeyFile, saKeyPEM, 0o600},
		{p.tokenFile, []byte(tokens), 0o600},
	} {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			return nil, fmt.Errorf("write %s: %w", f.path, err)
		}
	}
	return p, nil
}
