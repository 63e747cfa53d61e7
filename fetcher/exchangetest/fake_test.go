package exchangetest

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// recorder is a testing.TB that records Errorf instead of failing, so
// these tests can check that the fakes reject malformed requests.
type recorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recorder) errors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errs...)
}

const goodSync = `<m:SyncFolderItems><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape>` +
	`<m:SyncFolderId><t:DistinguishedFolderId Id="inbox"/></m:SyncFolderId><m:MaxChangesReturned>10</m:MaxChangesReturned></m:SyncFolderItems>`

func envelope(header, body string) string {
	return `<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="` + nsSOAP + `" xmlns:t="` + nsTypes + `" xmlns:m="` + nsMessages + `">` +
		`<soap:Header>` + header + `</soap:Header><soap:Body>` + body + `</soap:Body></soap:Envelope>`
}

func TestEWSFakeRejectsMalformedRequests(t *testing.T) {
	const version = `<t:RequestServerVersion Version="Exchange2013_SP1"/>`
	imp := `<t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>a@example.com</t:PrimarySmtpAddress></t:ConnectingSID></t:ExchangeImpersonation>`
	for _, tc := range []struct {
		name        string
		impersonate string
		body        string
		header      func(h http.Header)
		wantErr     string // "" = accepted
	}{
		{name: "valid", body: envelope(version, goodSync)},
		{name: "no SOAPAction", body: envelope(version, goodSync), header: func(h http.Header) { h.Del("SOAPAction") }, wantErr: "SOAPAction"},
		{name: "SOAPAction of another operation", body: envelope(version, goodSync),
			header: func(h http.Header) { h.Set("SOAPAction", nsMessages+"/GetItem") }, wantErr: "SOAPAction"},
		{name: "no RequestServerVersion", body: envelope("", goodSync), wantErr: "RequestServerVersion"},
		{name: "unknown version", body: envelope(`<t:RequestServerVersion Version="Exchange2099"/>`, goodSync), wantErr: "RequestServerVersion"},
		{name: "types element in messages namespace", body: envelope(version, strings.Replace(goodSync, "<t:BaseShape>IdOnly</t:BaseShape>", "<m:BaseShape>IdOnly</m:BaseShape>", 1)), wantErr: "types namespace"},
		{name: "operation in types namespace", body: envelope(version, strings.ReplaceAll(goodSync, "m:SyncFolderItems", "t:SyncFolderItems")), wantErr: "messages namespace"},
		{name: "content type", body: envelope(version, goodSync), header: func(h http.Header) { h.Set("Content-Type", "application/soap+xml") }, wantErr: "Content-Type"},
		{name: "impersonation without anchor", impersonate: "a@example.com", body: envelope(version+imp, goodSync), wantErr: "X-AnchorMailbox"},
		{name: "impersonation with anchor", impersonate: "a@example.com", body: envelope(version+imp, goodSync),
			header: func(h http.Header) { h.Set("X-AnchorMailbox", "a@example.com") }},
		{name: "missing impersonation", impersonate: "a@example.com", body: envelope(version, goodSync),
			header: func(h http.Header) { h.Set("X-AnchorMailbox", "a@example.com") }, wantErr: "ExchangeImpersonation"},
		{name: "MaxChangesReturned over 512", body: envelope(version, strings.Replace(goodSync, ">10<", ">513<", 1)), wantErr: "MaxChangesReturned"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{TB: t}
			f := NewEWS(rec, EWSOptions{Username: "u", Password: "p", Impersonate: tc.impersonate})
			req, _ := http.NewRequest(http.MethodPost, f.URL, strings.NewReader(tc.body))
			req.SetBasicAuth("u", "p")
			req.Header.Set("Content-Type", "text/xml; charset=utf-8")
			req.Header.Set("SOAPAction", `"`+nsMessages+`/SyncFolderItems"`)
			if tc.header != nil {
				tc.header(req.Header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			errs := rec.errors()
			if tc.wantErr == "" {
				if len(errs) != 0 || resp.StatusCode != 200 {
					t.Fatalf("valid request: status %d, fake errors %q", resp.StatusCode, errs)
				}
				return
			}
			if len(errs) == 0 || !strings.Contains(strings.Join(errs, "\n"), tc.wantErr) || resp.StatusCode != 500 {
				t.Fatalf("status %d, fake errors %q; want a 500 and an error about %s", resp.StatusCode, errs, tc.wantErr)
			}
		})
	}
	t.Run("bad password is a 401, not a test error", func(t *testing.T) {
		rec := &recorder{TB: t}
		f := NewEWS(rec, EWSOptions{Username: "u", Password: "p"})
		req, _ := http.NewRequest(http.MethodPost, f.URL, strings.NewReader(envelope(version, goodSync)))
		req.SetBasicAuth("u", "nope")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 || len(rec.errors()) != 0 || f.CountOps("SyncFolderItems") != 0 {
			t.Fatalf("status %d, errors %q", resp.StatusCode, rec.errors())
		}
	})
}

func TestGraphFakeRejectsMalformedRequests(t *testing.T) {
	const user = "a@example.com"
	for _, tc := range []struct {
		name, method, path, body string
		header                   map[string]string
		wantStatus               int
		wantErr                  string
	}{
		{name: "delta", method: "GET", path: "/users/a@example.com/mailFolders/inbox/messages/delta?changeType=created&$select=id", header: map[string]string{"Prefer": "odata.maxpagesize=5"}, wantStatus: 200},
		{name: "bad Prefer", method: "GET", path: "/users/a@example.com/mailFolders/inbox/messages/delta", header: map[string]string{"Prefer": "maxpagesize=5"}, wantStatus: 200, wantErr: "Prefer"},
		{name: "unknown query option", method: "GET", path: "/users/a@example.com/mailFolders/inbox/messages/delta?$expand=attachments", wantStatus: 400, wantErr: "query option"},
		{name: "select without id", method: "GET", path: "/users/a@example.com/mailFolders/inbox/messages/delta?$select=subject", wantStatus: 200, wantErr: "without id"},
		{name: "PATCH without JSON", method: "PATCH", path: "/users/a@example.com/messages/x", body: `{"isRead":true}`, wantStatus: 415, wantErr: "Content-Type"},
		{name: "unknown path", method: "GET", path: "/users/a@example.com/inbox", wantStatus: 400, wantErr: "unsupported request"},
		{name: "other user", method: "GET", path: "/users/b@example.com/mailFolders/inbox", wantStatus: 404},
		{name: "no token", method: "GET", path: "/users/a@example.com/mailFolders/inbox", header: map[string]string{"Authorization": ""}, wantStatus: 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{TB: t}
			g := NewGraph(rec, GraphOptions{User: user, Token: "tok"})
			req, _ := http.NewRequest(tc.method, strings.TrimSuffix(g.URL, "/v1.0")+"/v1.0"+tc.path, strings.NewReader(tc.body))
			req.Header.Set("Authorization", "Bearer tok")
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			errs := strings.Join(rec.errors(), "\n")
			if resp.StatusCode != tc.wantStatus {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			if (tc.wantErr == "") != (errs == "") || !strings.Contains(errs, tc.wantErr) {
				t.Errorf("fake errors %q, want one about %q", errs, tc.wantErr)
			}
		})
	}
}
