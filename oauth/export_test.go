package oauth

import "time"

// SetClock makes m use now instead of time.Now (token expiry, backoff,
// state expiry), so tests move time instead of sleeping.
func SetClock(m *Manager, now func() time.Time) { m.now = now }
