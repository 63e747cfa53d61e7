package fetcher

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff paces reconnect attempts within one Fetch: attempt n (from 1)
// waits a random duration in [d/2, d] with d = min(Max, Min·2^(n-1)).
// Across runs the scheduler simply calls Fetch again.
type Backoff struct {
	Attempts int           // connection attempts per Fetch; default 3
	Min      time.Duration // first delay; default 1s
	Max      time.Duration // cap; default 30s
}

func (b Backoff) withDefaults() Backoff {
	if b.Attempts <= 0 {
		b.Attempts = 3
	}
	if b.Min <= 0 {
		b.Min = time.Second
	}
	if b.Max <= 0 {
		b.Max = 30 * time.Second
	}
	if b.Max < b.Min {
		b.Max = b.Min
	}
	return b
}

// delay returns the wait before retry n (n >= 1), with jitter.
func (b Backoff) delay(n int) time.Duration {
	d := b.Min
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	if d > b.Max {
		d = b.Max
	}
	half := d / 2
	return half + rand.N(half+1)
}

// wait sleeps before retry n, or returns ctx's error when it is done first.
func (b Backoff) wait(ctx context.Context, n int) error {
	t := time.NewTimer(b.delay(n))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
