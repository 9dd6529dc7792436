package main

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestBuild builds an image like make image does and reads it back.
func TestBuild(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "koncli")
	if err := os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "image.tar")
	o := options{out: out, tag: "konlease/koncli:dev", caCerts: ca, nonroot: true, platform: "linux/amd64",
		add: multiFlag{bin + "=/usr/local/bin/koncli"}, entrypoint: multiFlag{"/usr/local/bin/koncli"}, labels: multiFlag{"a=b"}}
	digest, err := build(o)
	if err != nil {
		t.Fatal(err)
	}
	again, err := build(o)
	if err != nil || again != digest {
		t.Errorf("second build: %s, %v; want the same digest %s (reproducible)", again, err, digest)
	}

	tag, _ := name.NewTag(o.tag)
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.User != "65532:65532" || !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/koncli"}) || c.Labels["a"] != "b" ||
		!slices.Contains(c.Env, "SSL_CERT_FILE="+caBundle) || cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("config = %+v (%s/%s)", c, cf.OS, cf.Architecture)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers = %d, %v; want 1", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimSuffix(h.Name, "/")] = h
	}
	for path, want := range map[string]int64{
		"usr/local/bin/koncli": 0o755, "etc/passwd": 0o644, "etc/ssl/certs/ca-certificates.crt": 0o644,
		"tmp": 0o1777, "home/nonroot": 0o700, "usr/local/bin": 0o755,
	} {
		h, ok := files[path]
		if !ok || h.Mode != want {
			t.Errorf("%s in the layer: %+v, want mode %o", path, h, want)
		}
	}
	if h := files["home/nonroot"]; h != nil && h.Uid != nonrootID {
		t.Errorf("/home/nonroot owned by %d, want %d", h.Uid, nonrootID)
	}
}

func TestBuildRefuses(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := options{out: filepath.Join(dir, "o.tar"), tag: "x/y:z", platform: "linux/amd64"}
	tests := []struct {
		name    string
		change  func(*options)
		wantErr string
	}{
		{name: "nothing to add", change: func(*options) {}, wantErr: "nothing to add"},
		{name: "relative destination", change: func(o *options) { o.add = multiFlag{file + "=usr/f"} }, wantErr: "absolute"},
		{name: "added twice", change: func(o *options) { o.add = multiFlag{file + "=/f", file + "=/f"} }, wantErr: "twice"},
		{name: "file as a parent", change: func(o *options) { o.add = multiFlag{file + "=/f", file + "=/f/g"} }, wantErr: "is a file"},
		{name: "bad tag", change: func(o *options) { o.tag = "UPPER:x"; o.add = multiFlag{file + "=/f"} }, wantErr: "-tag"},
		{name: "not PEM", change: func(o *options) { o.caCerts = file }, wantErr: "no PEM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base
			tt.change(&o)
			if _, err := build(o); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("build: %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestCheckStatic(t *testing.T) {
	self, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Skipf("no /bin/sh to test a dynamic executable with: %v", err)
	}
	if err := checkStatic(self); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("checkStatic(/bin/sh) = %v, want it refused as dynamically linked", err)
	}
	if err := checkStatic([]byte("#!/bin/sh\n")); err != nil {
		t.Errorf("checkStatic of a script = %v, want nil", err)
	}
}
