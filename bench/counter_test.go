package main

import (
	"encoding/binary"
	"io"
	"strings"
	"testing"
)

// TestEventCounter reads events in small pieces, so that markers and
// frames are cut in two, in both wire formats.
func TestEventCounter(t *testing.T) {
	frame := func(typ string) string {
		msg := "\x0a" + string(rune(len(typ))) + typ + "\x12\x03abc"
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(msg)))
		return string(l[:]) + msg
	}
	for _, tc := range []struct {
		name  string
		body  string
		proto bool
	}{
		{"json", `{"type":"ADDED","object":{"a":1}}` + "\n" + `{"type":"MODIFIED","object":{}}` + "\n" + `{"type":"MODIFIED","object":{}}` + "\n", false},
		{"protobuf", frame("ADDED") + frame("MODIFIED") + frame("MODIFIED"), true},
	} {
		c := &counter{events: map[string]int{}}
		e := &eventCounter{ReadCloser: io.NopCloser(strings.NewReader(tc.body)), c: c, proto: tc.proto}
		buf := make([]byte, 5)
		for {
			if _, err := e.Read(buf); err != nil {
				break
			}
		}
		if c.events["ADDED"] != 1 || c.events["MODIFIED"] != 2 {
			t.Errorf("%s: counted %v, want ADDED 1, MODIFIED 2", tc.name, c.events)
		}
	}
}
