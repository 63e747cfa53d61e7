package worker

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/mailworker/mailworker/imaptest"
	"github.com/mailworker/mailworker/secret"
	"github.com/mailworker/mailworker/storage/storagetest"
)

// TestAdminHandler: /healthz follows the broker, /status reports every
// server, and with an admin token /status and /oauth/start refuse
// requests without it.
func TestAdminHandler(t *testing.T) {
	m := imaptest.StartMem(t, imaptest.MemOptions{Users: map[string]string{testUser: testPassword}})
	b := startBroker(t)
	w := openWorker(t, testConfig(t, storagetest.Drivers[0], b.url(), memServer("support", m)), nil)
	defer w.Close()

	open := httptest.NewServer(w.AdminHandler(secret.String{}))
	defer open.Close()
	get := func(srv *httptest.Server, path, token string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	if r := get(open, "/healthz", ""); r.StatusCode != 200 {
		t.Fatalf("/healthz = %d with the broker up", r.StatusCode)
	}
	r := get(open, "/status", "")
	var st []ServerStatus
	if err := json.NewDecoder(r.Body).Decode(&st); err != nil || len(st) != 1 || st[0].Server != "support" {
		t.Fatalf("/status = %v, %v", st, err)
	}

	guarded := httptest.NewServer(w.AdminHandler(secret.New("admin-token-1")))
	defer guarded.Close()
	for _, path := range []string{"/status", "/oauth/start?server=support"} {
		if r := get(guarded, path, ""); r.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s without the token = %d; want 401", path, r.StatusCode)
		}
	}
	if r := get(guarded, "/status", "admin-token-1"); r.StatusCode != 200 {
		t.Errorf("/status with the token = %d", r.StatusCode)
	}
	if r := get(guarded, "/healthz", ""); r.StatusCode != 200 {
		t.Errorf("/healthz needs no token, got %d", r.StatusCode)
	}

	b.stop()
	waitFor(t, 10*time.Second, "the worker to notice the broker is gone", func() bool { return !w.Publisher().Healthy() })
	if r := get(open, "/healthz", ""); r.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/healthz = %d with the broker down; want 503", r.StatusCode)
	}
}
