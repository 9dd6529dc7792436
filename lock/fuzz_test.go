package lock

import (
	"errors"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/konlease/konlease/ttl"
)

// FuzzDecode feeds arbitrary annotation values and spec fields to the
// decoder that guards every write: it must never panic, must refuse what is
// not a well-formed mutex with ErrNotMutex, and what it accepts must
// survive an acquire/release round trip unchanged in its contract.
func FuzzDecode(f *testing.F) {
	f.Add(true, "explicit", true, "30s", "alice", int32(3), true)
	f.Add(true, "explicit", false, "", "", int32(0), false)
	f.Add(false, "", false, "", "leader", int32(7), true)
	f.Add(true, "Explicit", true, "1h", "x", int32(0), false)
	f.Add(true, "explicit", true, "500ms", "", int32(-1), false)
	f.Add(true, "explicit", true, "1.5s", "p\x00q", int32(2147483647), true)
	f.Fuzz(func(t *testing.T, hasMode bool, mode string, hasTTL bool, ttlValue, holder string, token int32, hasHolder bool) {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "m", Annotations: map[string]string{}}}
		if hasMode {
			l.Annotations[AnnotationUnlock] = mode
		}
		if hasTTL {
			l.Annotations[AnnotationTTL] = ttlValue
		}
		if hasHolder {
			l.Spec.HolderIdentity = &holder
		}
		l.Spec.LeaseTransitions = &token
		r, err := decode(l)
		if err != nil {
			if !errors.Is(err, ErrNotMutex) {
				t.Fatalf("decode error %v does not match ErrNotMutex", err)
			}
			return
		}
		if !hasMode || mode != UnlockExplicit {
			t.Fatalf("decode accepted a Lease without the mutex annotation (%v, %q)", hasMode, mode)
		}
		if hasTTL && ttl.Validate(r.ttl) != nil {
			t.Fatalf("decode accepted TTL %q as %s", ttlValue, r.ttl)
		}
		if r.token < 0 {
			t.Fatalf("decode accepted negative token %d", r.token)
		}
		now := time.Unix(1_700_000_000, 0)
		acquired, next, err := r.acquire("fuzz", now)
		if err != nil {
			if r.token != 1<<31-1 || !errors.Is(err, ErrTokenExhausted) {
				t.Fatalf("acquire at token %d: %v", r.token, err)
			}
			return
		}
		back, err := decode(acquired)
		if err != nil || back.holder != "fuzz" || back.token != next || next != r.token+1 || back.ttl != r.ttl {
			t.Fatalf("acquire round trip: got %+v, %v", back, err)
		}
		rel, err := decode(back.release(now))
		if err != nil || rel.held() || rel.token != next || rel.ttl != r.ttl {
			t.Fatalf("release round trip: got %+v, %v", rel, err)
		}
	})
}
