package record

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestEnterExit(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	a := Entry{Pod: "a", Holder: "a-1-x", Token: 1, Entered: t0}
	b := Entry{Pod: "b", Holder: "b-1-y", Token: 2, Entered: t0.Add(time.Second)}
	stale := Entry{Pod: "c", Holder: "c-1-z", Token: 1, Entered: t0.Add(2 * time.Second)}
	tests := []struct {
		name          string
		steps         func(r *Record)
		wantViolation string
		wantInside    bool
	}{
		{name: "one after the other", steps: func(r *Record) {
			r.Enter(a)
			r.Exit(a, "ok", t0)
			r.Enter(b)
			r.Exit(b, "ok", t0)
		}},
		{name: "overlap", steps: func(r *Record) {
			r.Enter(a)
			r.Enter(b)
		}, wantViolation: "entered while a", wantInside: true},
		{name: "token not rising", steps: func(r *Record) {
			r.Enter(b)
			r.Exit(b, "ok", t0)
			r.Enter(stale)
		}, wantViolation: "not above the earlier 2", wantInside: true},
		{name: "another's exit leaves the holder inside", steps: func(r *Record) {
			r.Enter(b)
			r.Exit(a, "ok", t0)
		}, wantInside: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Record
			tt.steps(&r)
			got := strings.Join(r.Violations, "; ")
			if tt.wantViolation == "" && got != "" || !strings.Contains(got, tt.wantViolation) {
				t.Errorf("violations %q, want %q", got, tt.wantViolation)
			}
			if (r.Inside != nil) != tt.wantInside {
				t.Errorf("inside %+v, want inside %v", r.Inside, tt.wantInside)
			}
		})
	}
}

func TestDurationJSON(t *testing.T) {
	raw, err := json.Marshal(Record{Hold: Duration{1500 * time.Millisecond}})
	if err != nil || !strings.Contains(string(raw), `"hold":"1.5s"`) {
		t.Fatalf("Marshal = %s, %v; want the hold as a Go duration", raw, err)
	}
	var r Record
	if err := json.Unmarshal(raw, &r); err != nil || r.Hold.Duration != 1500*time.Millisecond {
		t.Errorf("Unmarshal = %v, %v", r.Hold, err)
	}
	if err := json.Unmarshal([]byte(`{"hold":"soon"}`), &r); err == nil {
		t.Error("Unmarshal of a bad duration: no error")
	}
}
