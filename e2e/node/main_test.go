//go:build e2e

// Package node holds the e2e tests that run pods: the example manifests of
// examples/ on a node, with the koncli image of `make image` and the images
// of `make node-images`. They run on the local node of the harness
// (harness.NodeOptions: root only; make e2e builds it as root) or on an
// external cluster with nodes that has the images (make e2e-kind loads
// them; KONLEASE_E2E_KUBECONFIG otherwise). Without root and without an
// external cluster every test skips, saying why.
package node

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/konlease/konlease/e2e/harness"
)

// The image archives of make image and make node-images (bin/images).
const (
	koncliArchive  = "koncli.tar"
	appArchive     = "e2e-app.tar"
	exampleArchive = "example-with.tar"
	pauseArchive   = "pause.tar"
)

// suite is the cluster the tests run on, and why they cannot run if so.
type suite struct {
	env *harness.Env
	// skip, when set, is why no test can run here.
	skip string
	// images maps an archive of bin/images to the image name in it.
	images map[string]string
}

var s suite

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	external := os.Getenv(harness.EnvKubeconfig) != ""
	if !external && os.Geteuid() != 0 {
		os.Exit(skipAll(m, "the local node needs root (namespaces, containerd, kubelet); run as root, or give a cluster with nodes in "+harness.EnvKubeconfig))
	}
	images, err := imageArchives()
	if err != nil {
		if external {
			os.Exit(skipAll(m, err.Error()))
		}
		// As root the node must be there: make e2e builds it.
		fmt.Fprintf(os.Stderr, "node tests: %v\n", err)
		os.Exit(1)
	}
	s.images = map[string]string{}
	var paths []string
	for archive, path := range images {
		names, err := harness.ImageNames(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "node tests: %v (run make node-images)\n", err)
			os.Exit(1)
		}
		s.images[archive] = names[0]
		paths = append(paths, path)
	}
	os.Exit(harness.Main(m, harness.Options{Node: &harness.NodeOptions{Images: paths}}, &s.env))
}

// skipAll runs the tests with every one skipping, saying why, loudly.
func skipAll(m *testing.M, why string) int {
	s.skip = why
	fmt.Fprintf(os.Stderr, "\n*** node tests SKIPPED: %s ***\n\n", why)
	return m.Run()
}

// imageArchives finds the archives of bin/images (KONLEASE_CONTROLPLANE_BIN
// moves bin/).
func imageArchives() (map[string]string, error) {
	dir := os.Getenv(harness.EnvBinDir)
	if dir == "" {
		root, err := harness.RepoRoot()
		if err != nil {
			return nil, err
		}
		dir = filepath.Join(root, "bin")
	}
	out := map[string]string{}
	var missing []string
	for _, a := range []string{koncliArchive, appArchive, exampleArchive, pauseArchive} {
		p := filepath.Join(dir, "images", a)
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
		out[a] = p
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("image archives missing: %s (run make node-images)", strings.Join(missing, ", "))
	}
	return out, nil
}

// require skips the test where the suite cannot run, and, with local,
// where there is no local node (the test acts on the node from the host).
func require(t *testing.T, local bool) {
	t.Helper()
	if s.skip != "" {
		t.Skip("SKIPPED: " + s.skip)
	}
	if _, ok := s.env.Node(); local && !ok {
		t.Skip("needs the harness's local node (it acts on containers from the host); the cluster is external")
	}
}
