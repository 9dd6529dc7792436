package ttl_test

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/konlease/konlease/ttl"
)

func ExampleParse() {
	for _, s := range []string{"30s", "1h30m", "1.5s", "30", "500ms", " 5m"} {
		d, err := ttl.Parse(s)
		if err != nil {
			fmt.Println(errors.Is(err, ttl.ErrInvalid), err)
			continue
		}
		fmt.Printf("%s: annotation %s, leaseDurationSeconds %d, renew every %v\n",
			s, ttl.Format(d), ttl.LeaseDurationSeconds(d), ttl.RenewInterval(d))
	}
	// Output:
	// 30s: annotation 30s, leaseDurationSeconds 30, renew every 10s
	// 1h30m: annotation 1h30m0s, leaseDurationSeconds 5400, renew every 30m0s
	// 1.5s: annotation 1.5s, leaseDurationSeconds 2, renew every 500ms
	// true invalid TTL "30": missing unit; did you mean "30s"?
	// true invalid TTL "500ms": below the minimum of 1s
	// true invalid TTL " 5m": contains white space; write the duration without spaces, e.g. "5m"
}

func ExampleExpiry_TakeoverAt() {
	// A waiter's local clock (faked here) and the API server's clock, which
	// happens to be 1h ahead; neither fact is known to the waiter.
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakeClock(start)
	serverNow := func() time.Time { return clk.Now().Add(time.Hour) }
	sc := ttl.NewServerClock(clk)

	// The waiter GETs the Lease; the response's Date header feeds sc.
	sent := clk.Now()
	clk.Step(40 * time.Millisecond)
	date, _ := ttl.ParseDate(serverNow().Add(-20 * time.Millisecond).Format(http.TimeFormat))
	sc.Observe(date, sent, clk.Now())

	// A record last written 20 minutes ago (server time), with a 5m TTL:
	// its holder is long gone, and rule (b) says so at once.
	stale := ttl.Expiry{TTL: 5 * time.Minute, FirstSeen: clk.Now(), LastWrite: date.Add(-20 * time.Minute)}
	fmt.Println("stale:", stale.Expired(clk.Now(), sc))

	// A record written just now: rule (a) applies, 5m after it was seen.
	fresh := ttl.Expiry{TTL: 5 * time.Minute, FirstSeen: clk.Now(), LastWrite: date}
	fmt.Println("fresh:", fresh.Expired(clk.Now(), sc), "takeover in", fresh.TakeoverAt(sc).Sub(clk.Now()))
	clk.Step(5 * time.Minute)
	fmt.Println("fresh, 5m later:", fresh.Expired(clk.Now(), sc))
	// Output:
	// stale: true
	// fresh: false takeover in 5m0s
	// fresh, 5m later: true
}
