package config_test

import (
	"errors"
	"os"
	"testing"

	"github.com/mailworker/mailworker/config"
)

// FuzzParse checks that no input makes the decoder panic, and that every
// error it returns is a config.Errors.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("../mailworker.example.yaml"); err == nil {
		f.Add(b)
	}
	f.Add([]byte(imapServer))
	f.Add([]byte("x-a: &a {host: h}\nservers:\n  - <<: *a\n    name: n\n"))
	f.Add([]byte("servers: [{name: a, auth: {oauth: {scopes: [a, {b: c}]}}}]"))
	env := map[string]string{"MAILWORKER_SERVERS_SUPPORT_AUTH_OAUTH_SCOPES": "a,b", "MAILWORKER_NATS_TLS_CA_FILE": "/x"}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse("f.yaml", data, func(k string) string { return env[k] })
		if err != nil {
			var errs config.Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("Parse error %v (%T) is not config.Errors", err, err)
			}
			return
		}
		_ = c.Validate() // must not panic; the result is checked in load_test.go
	})
}
