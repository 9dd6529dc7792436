package ttl

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzParse checks that Parse never panics, that every error wraps
// ErrInvalid and that every accepted value is in range and survives a
// Format/Parse round trip. Seeds are in testdata/fuzz/FuzzParse as well.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"30s", "1h30m", "1.5s", "8760h", "0", "-1s", "500ms", " 5m", "30", "1e3s", "+5m", "9223372036854775807ns"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q) error %q does not wrap ErrInvalid", s, err)
			}
			if d != 0 {
				t.Fatalf("Parse(%q) = %v with error %v, want 0", s, d, err)
			}
			return
		}
		if d < Min || d > Max {
			t.Fatalf("Parse(%q) = %v, outside [%v, %v]", s, d, Min, Max)
		}
		if err := Validate(d); err != nil {
			t.Fatalf("Parse(%q) = %v, but Validate says %v", s, d, err)
		}
		f := Format(d)
		if strings.ContainsAny(f, " \t\n") {
			t.Fatalf("Format(%v) = %q contains white space", d, f)
		}
		back, err := Parse(f)
		if err != nil || back != d {
			t.Fatalf("Parse(Format(%v)) = %v, %v; want %v, nil", d, back, err, d)
		}
		if secs := LeaseDurationSeconds(d); time.Duration(secs)*time.Second < d || time.Duration(secs-1)*time.Second >= d {
			t.Fatalf("LeaseDurationSeconds(%v) = %d, not the ceiling", d, secs)
		}
	})
}

// FuzzParseDate checks that ParseDate never panics and that every accepted
// value is a whole-second UTC time that the IMF-fixdate form (what servers
// send) reproduces exactly.
func FuzzParseDate(f *testing.F) {
	for _, s := range []string{
		"Sun, 06 Nov 1994 08:49:37 GMT",
		"Sunday, 06-Nov-94 08:49:37 GMT",
		"Sun Nov  6 08:49:37 1994",
		"Sunday, 06-Nov-94 08:49:37 PST",
		"Sun, 06 Nov 1994 08:49:37.5 GMT",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDate(s)
		if err != nil {
			if !d.IsZero() {
				t.Fatalf("ParseDate(%q) = %v with error %v, want zero", s, d, err)
			}
			return
		}
		if d.Location() != time.UTC {
			t.Fatalf("ParseDate(%q) = %v in %v, want UTC", s, d, d.Location())
		}
		if d.Nanosecond() != 0 {
			t.Fatalf("ParseDate(%q) = %v, not whole seconds", s, d)
		}
		if _, err := http.ParseTime(s); err != nil {
			t.Fatalf("ParseDate(%q) accepted what http.ParseTime rejects: %v", s, err)
		}
		back, err := ParseDate(d.Format(http.TimeFormat))
		if err != nil || !back.Equal(d) {
			t.Fatalf("ParseDate(%q) = %v, but its IMF-fixdate form parses to %v, %v", s, d, back, err)
		}
	})
}
