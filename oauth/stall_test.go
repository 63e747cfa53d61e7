package oauth_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/oauth"
	"github.com/mailworker/mailworker/oauth/oauthtest"
	"github.com/mailworker/mailworker/storage/storagetest"
)

// TestTokenEndpointStall: a token endpoint that sends its headers and the
// start of the JSON, then nothing (the connection left open), fails the
// request after the server's stall_timeout, well before the 30 s token
// timeout, as a temporary error that says it stalled.
func TestTokenEndpointStall(t *testing.T) {
	release := make(chan struct{})
	stuck := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"access_token":"`))
		http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(stuck.Close)
	t.Cleanup(func() { close(release) }) // runs first: the handler returns, Close does not wait

	e := newEnv(t, storagetest.Open(t, "sqlite"), oauthtest.Options{})
	srv := e.server("stuck", config.FlowClientCredentials, "shared@example.test")
	srv.Auth.OAuth.TokenURL = stuck.URL + "/token"
	srv.StallTimeout = config.Duration(time.Second)
	e.m.SetServers([]config.Server{srv})
	start := time.Now()
	_, err := e.m.Credentials(srv).AccessToken(context.Background(), false)
	took := time.Since(start)
	if !errors.Is(err, oauth.ErrTemporary) || !strings.Contains(err.Error(), "stalled") {
		t.Fatalf("AccessToken = %v; want a temporary error saying the endpoint stalled", err)
	}
	if took > 10*time.Second {
		t.Fatalf("the stalled token request took %s; want about the 1s stall timeout", took)
	}
}
