package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
)

// nodePKI holds what the node adds to the control plane's credentials:
// kube-apiserver's client certificate for kubelet (logs, exec), the CA that
// kubelet trusts for it, and kubelet's own token.
type nodePKI struct {
	kubeletClientCAFile  string
	apiserverKubeletCert string
	apiserverKubeletKey  string
	kubeletToken         string
	kubeletUser          string
}

const (
	// nodesGroup is the group of kubelet identities; the harness binds it
	// to the ClusterRole system:node, which RBAC bootstraps unbound.
	nodesGroup = "system:nodes"
	// apiserverKubeletClient is the user kube-apiserver presents to kubelet.
	apiserverKubeletClient = "konlease-e2e:apiserver-kubelet-client"
	certValidity           = 24 * time.Hour
)

// writeNodePKI generates the node's credentials under dir and adds
// kubelet's token to the API server's token file.
func writeNodePKI(dir string, p *pki, nodeName string) (*nodePKI, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate kubelet client CA key: %w", err)
	}
	ca, err := cert.NewSelfSignedCACert(cert.Config{CommonName: "konlease-e2e-kubelet-client-ca"}, caKey)
	if err != nil {
		return nil, fmt.Errorf("generate kubelet client CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate kube-apiserver client key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: apiserverKubeletClient},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("sign kube-apiserver client certificate: %w", err)
	}
	clientCert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyPEM, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return nil, err
	}
	caPEM, err := cert.EncodeCertificates(ca)
	if err != nil {
		return nil, err
	}
	certPEM, err := cert.EncodeCertificates(clientCert)
	if err != nil {
		return nil, err
	}
	np := &nodePKI{
		kubeletClientCAFile:  filepath.Join(dir, "kubelet-client-ca.crt"),
		apiserverKubeletCert: filepath.Join(dir, "apiserver-kubelet-client.crt"),
		apiserverKubeletKey:  filepath.Join(dir, "apiserver-kubelet-client.key"),
		kubeletToken:         rand.Text(),
		kubeletUser:          "system:node:" + nodeName,
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{np.kubeletClientCAFile, caPEM, 0o644},
		{np.apiserverKubeletCert, certPEM, 0o644},
		{np.apiserverKubeletKey, keyPEM, 0o600},
	} {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			return nil, fmt.Errorf("write %s: %w", f.path, err)
		}
	}
	tokens, err := os.OpenFile(p.tokenFile, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("add kubelet token: %w", err)
	}
	if _, err := fmt.Fprintf(tokens, "%s,%s,%s,%q\n", np.kubeletToken, np.kubeletUser, np.kubeletUser, nodesGroup); err != nil {
		tokens.Close()
		return nil, fmt.Errorf("add kubelet token: %w", err)
	}
	if err := tokens.Close(); err != nil {
		return nil, fmt.Errorf("add kubelet token: %w", err)
	}
	return np, nil
}
