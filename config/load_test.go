package config_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailworker/mailworker/config"
)

// load writes yaml to a temporary mailworker.yaml and loads it with env as
// the only environment.
func load(t *testing.T, yaml string, env map[string]string) (*config.Config, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mailworker.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return config.LoadWith(path, config.LoadOptions{Getenv: func(k string) string { return env[k] }})
}

// want is one expected error: line, key and a part of the reason.
type want struct {
	line   int
	key    string
	reason string
}

func checkErrors(t *testing.T, err error, wants []want) {
	t.Helper()
	var errs config.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error = %v (%T), want config.Errors", err, err)
	}
	if len(errs) != len(wants) {
		t.Fatalf("got %d errors, want %d:\n%v", len(errs), len(wants), err)
	}
	for i, w := range wants {
		e := errs[i]
		if e.Line != w.line || e.Key != w.key || !strings.Contains(e.Reason, w.reason) {
			t.Errorf("error %d = line %d key %q reason %q; want line %d key %q reason containing %q",
				i, e.Line, e.Key, e.Reason, w.line, w.key, w.reason)
		}
		if !strings.HasSuffix(e.File, "mailworker.yaml") {
			t.Errorf("error %d: File = %q, want the config file", i, e.File)
		}
	}
}

// imapServer is a valid server entry; cases append lines to it (lines 1-9).
const imapServer = `servers:
  - name: support
    protocol: imaps
    host: imap.example.com
    username: support@example.com
    auth:
      method: password
      password_env: SUPPORT_PW
    fetch_interval: 1m
`

func TestLoadValid(t *testing.T) {
	c, err := load(t, imapServer, nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	s, ok := c.Server("support")
	if !ok {
		t.Fatal(`Server("support") not found`)
	}
	if s.Port != 993 || s.Folder != "INBOX" || s.MaxPerFetch != 500 || s.AfterFetch.Action != config.ActionMarkSeen {
		t.Errorf("server defaults: port %d folder %q max %d after %q", s.Port, s.Folder, s.MaxPerFetch, s.AfterFetch)
	}
	if s.FetchInterval.D() != time.Minute {
		t.Errorf("fetch_interval = %v, want 1m", s.FetchInterval)
	}
	if s.StallTimeout.D() != 60*time.Second {
		t.Errorf("stall_timeout = %v, want the default 60s", s.StallTimeout)
	}
	if c.DataDir != "./data" || c.Database.Driver != "sqlite" || c.NATS.Stream != "MAIL" ||
		c.NATS.SubjectPrefix != "mail" || c.NATS.DuplicateWindow.D() != 10*time.Minute || c.NATS.Replicas != 1 ||
		c.NATS.Listen != "127.0.0.1:4222" || c.Admin.Listen != "127.0.0.1:8025" || c.Log.Level != "info" || c.Parser.MaxMessageBytes != 150<<20 ||
		c.Parser.MaxParts != 1000 || c.Parser.MaxDepth != 20 || c.Parser.LoopHeader != "X-Mailworker-Loop" {
		t.Errorf("top-level defaults not applied: %+v", c)
	}
	if !strings.HasSuffix(c.Path, "mailworker.yaml") {
		t.Errorf("Path = %q", c.Path)
	}
	if s.PlusAddressTicketRef || s.TrustedAuthservIDs != nil {
		t.Errorf("plus_address_ticket_ref %v trusted_authserv_ids %v, want off and none by default", s.PlusAddressTicketRef, s.TrustedAuthservIDs)
	}

	c, err = load(t, imapServer+"    plus_address_ticket_ref: true\n    trusted_authserv_ids: [mx.example.com, MX2.example.com]\n", nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	s, _ = c.Server("support")
	if !s.PlusAddressTicketRef || strings.Join(s.TrustedAuthservIDs, ",") != "mx.example.com,MX2.example.com" {
		t.Errorf("plus_address_ticket_ref %v trusted_authserv_ids %v", s.PlusAddressTicketRef, s.TrustedAuthservIDs)
	}
}

func TestDefaultsByProtocol(t *testing.T) {
	c, err := load(t, `servers:
  - {name: a, protocol: imap, host: h, username: u, auth: {method: password, password_env: P}}
  - {name: b, protocol: ews, ews_url: "https://x/EWS/Exchange.asmx", username: u, auth: {method: ntlm, password_env: P}}
  - name: c
    protocol: graph
    mailbox: Box@Example.com
    auth: {method: oauth2, oauth: {provider: microsoft, flow: pkce, client_id: id}}
`, nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	a, b, g := c.Servers[0], c.Servers[1], c.Servers[2]
	if a.Port != 143 || a.Folder != "INBOX" {
		t.Errorf("imap: port %d folder %q, want 143 INBOX", a.Port, a.Folder)
	}
	if b.Folder != "inbox" || b.EWSVersion != "Exchange2013_SP1" {
		t.Errorf("ews: folder %q version %q", b.Folder, b.EWSVersion)
	}
	if g.Folder != "inbox" || g.Auth.OAuth.Tenant != "organizations" {
		t.Errorf("graph: folder %q tenant %q", g.Folder, g.Auth.OAuth.Tenant)
	}
	if got := g.MailboxID(); got != "box@example.com" {
		t.Errorf("MailboxID = %q, want box@example.com", got)
	}
}

func TestDurations(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"7", 7 * time.Minute},
		{"90s", 90 * time.Second},
		{"5m", 5 * time.Minute},
		{"1h30m", 90 * time.Minute},
		{`"15"`, 15 * time.Minute},
	} {
		yaml := strings.Replace(imapServer, "fetch_interval: 1m", "fetch_interval: "+tc.in, 1) +
			"nats:\n  duplicate_window: " + tc.in + "\n"
		c, err := load(t, yaml, nil)
		if err != nil {
			t.Fatalf("duration %s: %v", tc.in, err)
		}
		if got := c.NATS.DuplicateWindow.D(); got != tc.want {
			t.Errorf("duplicate_window %s = %v, want %v", tc.in, got, tc.want)
		}
		if got := c.Servers[0].FetchInterval.D(); got != tc.want {
			t.Errorf("fetch_interval %s = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestValidation(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []want
	}{
		{"unknown top key", "natz:\n  url: x\n", []want{{1, "natz", "unknown key (did you mean nats?)"}}},
		{"unknown server key", imapServer + "    hots: x\n", []want{{10, "servers.support.hots", "unknown key (did you mean host?)"}}},
		{"wrong type", imapServer + "    port: many\n", []want{{10, "servers.support.port", `want an integer, got "many"`}}},
		{"mapping for string", "data_dir: {a: b}\n", []want{{1, "data_dir", "want a string, not a mapping"}}},
		{"duplicate key", imapServer + "    host: other\n", []want{{10, "servers.support.host", "key written twice (first at line 4)"}}},
		{"bad duration", imapServer + "    max_per_fetch: 3\nnats:\n  duplicate_window: soon\n", []want{{12, "nats.duplicate_window", `invalid duration "soon"`}}},
		{"fetch interval too short", strings.Replace(imapServer, "fetch_interval: 1m", "fetch_interval: 5s", 1),
			[]want{{9, "servers.support.fetch_interval", "must be at least 10s, got 5s"}}},
		{"fetch interval zero", strings.Replace(imapServer, "fetch_interval: 1m", "fetch_interval: 0", 1),
			[]want{{9, "servers.support.fetch_interval", "must be at least 10s, got 0s"}}},
		{"stall_timeout too short", imapServer + "    stall_timeout: 2s\n", []want{{10, "servers.support.stall_timeout", "must be between 5s and 30m0s, got 2s"}}},
		{"stall_timeout too long", imapServer + "    stall_timeout: 2h\n", []want{{10, "servers.support.stall_timeout", "must be between 5s and 30m0s, got 2h0m0s"}}},
		{"stall_timeout zero", imapServer + "    stall_timeout: 0\n", []want{{10, "servers.support.stall_timeout", "must be between 5s and 30m0s, got 0s"}}},
		{"stall_timeout ok", imapServer + "    stall_timeout: 90s\n", nil},
		{"max_per_fetch zero", imapServer + "    max_per_fetch: 0\n", []want{{10, "servers.support.max_per_fetch", "must be positive"}}},
		{"max_per_fetch negative", imapServer + "    max_per_fetch: -1\n", []want{{10, "servers.support.max_per_fetch", "must be positive, got -1"}}},
		{"after_fetch", imapServer + "    after_fetch: archive\n", []want{{10, "servers.support.after_fetch", `unknown after_fetch "archive"`}}},
		{"after_fetch move without folder", imapServer + "    after_fetch: \"move:\"\n", []want{{10, "servers.support.after_fetch", "move needs a folder"}}},
		{"bad address", imapServer + "    addresses: [ok@example.com, \"Support <s@example.com>\", nope]\n", []want{
			{10, "servers.support.addresses[1]", `invalid mail address "Support <s@example.com>"`},
			{10, "servers.support.addresses[2]", `invalid mail address "nope"`}}},
		{"new_request_allow", imapServer + "    new_request_allow:\n      - a@example.com\n      - \"*@example.org\"\n      - \"*@\"\n      - \"*.example.org\"\n", []want{
			{10, "servers.support.new_request_allow[2]", "invalid domain"},
			{10, "servers.support.new_request_allow[3]", "want address or *@domain"}}},
		{"trusted_authserv_ids", imapServer + "    plus_address_ticket_ref: true\n    trusted_authserv_ids:\n      - mx.example.com\n      - \"mx example.com\"\n      - \"\"\n      - \"mx;1\"\n", []want{
			{11, "servers.support.trusted_authserv_ids[1]", "invalid authserv-id"},
			{11, "servers.support.trusted_authserv_ids[2]", "invalid authserv-id"},
			{11, "servers.support.trusted_authserv_ids[3]", "invalid authserv-id"}}},
		{"plus_address_ticket_ref not a bool", imapServer + "    plus_address_ticket_ref: sometimes\n", []want{
			{10, "servers.support.plus_address_ticket_ref", "want"}}},
		{"server name", strings.Replace(imapServer, "name: support", "name: Support Desk", 1), []want{{2, "servers[0].name", `invalid name "Support Desk"`}}},
		{"server name missing", strings.Replace(imapServer, "  - name: support\n    protocol", "  - protocol", 1), []want{{2, "servers[0].name", "required"}}},
		{"duplicate server", imapServer + strings.TrimPrefix(imapServer, "servers:\n"), []want{{10, "servers.support.name", "duplicate server name \"support\" (first at line 2)"}}},
		{"protocol unknown", strings.Replace(imapServer, "protocol: imaps", "protocol: pop3", 1), []want{{3, "servers.support.protocol", `unknown protocol "pop3"`}}},
		{"protocol missing", strings.Replace(imapServer, "    protocol: imaps\n", "", 1), []want{{2, "servers.support.protocol", "required"}}},
		{"imap host", strings.Replace(imapServer, "    host: imap.example.com\n", "", 1), []want{{2, "servers.support.host", "required for protocol imaps"}}},
		{"port range", imapServer + "    port: 70000\n", []want{{10, "servers.support.port", "between 1 and 65535"}}},
		{"ews url missing", `servers:
  - name: ex
    protocol: ews
    username: u
    auth: {method: ntlm, password_env: P}
`, []want{{2, "servers.ex.ews_url", "required for protocol ews"}}},
		{"ews url http", `servers:
  - name: ex
    protocol: ews
    ews_url: http://mail.example.com/EWS/Exchange.asmx
    username: u
    auth: {method: ntlm, password_env: P}
`, []want{{4, "servers.ex.ews_url", "must use https"}}},
		{"ews url http loopback ok", `servers:
  - name: ex
    protocol: ews
    ews_url: http://127.0.0.1:8080/EWS/Exchange.asmx
    username: u
    auth: {method: password, password_env: P}
`, nil},
		{"graph mailbox", `servers:
  - name: g
    protocol: graph
    auth: {method: oauth2, oauth: {provider: microsoft, flow: pkce, client_id: id}}
`, []want{{2, "servers.g.mailbox", "required for protocol graph"}}},
		{"graph password", `servers:
  - name: g
    protocol: graph
    mailbox: a@b.c
    auth: {method: password, password_env: P}
`, []want{{5, "servers.g.auth.method", "not possible with protocol graph"}}},
		{"graph google", `servers:
  - name: g
    protocol: graph
    mailbox: a@b.c
    auth: {method: oauth2, oauth: {provider: google, flow: pkce, client_id: id}}
`, []want{{5, "servers.g.auth.oauth.provider", "provider google cannot be used with protocol graph"}}},
		{"ntlm on imap", strings.Replace(imapServer, "method: password", "method: ntlm", 1), []want{{7, "servers.support.auth.method", "method ntlm is only for protocol ews"}}},
		{"method unknown", strings.Replace(imapServer, "method: password", "method: kerberos", 1), []want{{7, "servers.support.auth.method", `unknown method "kerberos" (want password or oauth2)`}}},
		{"password missing", strings.Replace(imapServer, "      password_env: SUPPORT_PW\n", "", 1), []want{{6, "servers.support.auth", "method password needs password_env or password_file"}}},
		{"password both", strings.Replace(imapServer, "password_env: SUPPORT_PW\n", "password_env: SUPPORT_PW\n      password_file: /etc/pw\n", 1), []want{{9, "servers.support.auth.password_file", "set only one of"}}},
		{"password file missing", strings.Replace(imapServer, "password_env: SUPPORT_PW", "password_file: /nonexistent/pw", 1), []want{{8, "servers.support.auth.password_file", "cannot read"}}},
		{"password_env holds a secret", strings.Replace(imapServer, "password_env: SUPPORT_PW", "password_env: \"hunter2!\"", 1), []want{{8, "servers.support.auth.password_env", "must name an environment variable"}}},
		{"username for password", strings.Replace(imapServer, "    username: support@example.com\n", "", 1), []want{{2, "servers.support.username", "required for method password"}}},
		{"oauth block with password", imapServer + "    auth:\n", []want{{10, "servers.support.auth", "key written twice"}}},
		{"oauth provider missing", oauthServer(""), []want{
			{8, "servers.o.auth.oauth.provider", "required (google, microsoft or custom)"},
			{8, "servers.o.auth.oauth.client_id", "required for flow pkce"}}},
		{"oauth provider unknown", oauthServer("provider: github\n        flow: pkce\n        client_id: id"), []want{{9, "servers.o.auth.oauth.provider", `unknown provider "github"`}}},
		{"oauth flow unknown", oauthServer("provider: google\n        flow: implicit\n        client_id: id"), []want{{10, "servers.o.auth.oauth.flow", `unknown flow "implicit"`}}},
		{"oauth client_id", oauthServer("provider: google\n        flow: pkce"), []want{{8, "servers.o.auth.oauth.client_id", "required for flow pkce"}}},
		{"oauth manual without client_id", oauthServer("provider: google\n        flow: manual"), nil},
		{"oauth code flow secret", oauthServer("provider: google\n        flow: authorization_code\n        client_id: id"), []want{{8, "servers.o.auth.oauth", "flow authorization_code needs client_secret_env or client_secret_file"}}},
		{"oauth client credentials secret", oauthServer("provider: microsoft\n        tenant: contoso.com\n        flow: client_credentials\n        client_id: id"), []want{{8, "servers.o.auth.oauth", "flow client_credentials needs client_secret_env or client_secret_file"}}},
		{"oauth client credentials tenant", oauthServer("provider: microsoft\n        flow: client_credentials\n        client_id: id\n        client_secret_env: CS"), []want{{8, "servers.o.auth.oauth.tenant", `needs your tenant id or domain, not "organizations"`}}},
		{"oauth google client credentials", oauthServer("provider: google\n        flow: client_credentials\n        client_id: id\n        client_secret_env: CS"), []want{{10, "servers.o.auth.oauth.flow", "google has no client_credentials grant"}}},
		{"oauth custom urls", oauthServer("provider: custom\n        flow: pkce\n        client_id: id"), []want{
			{8, "servers.o.auth.oauth.token_url", "required for provider custom"},
			{8, "servers.o.auth.oauth.auth_url", "required for provider custom with flow pkce"}}},
		{"oauth custom client credentials needs no auth_url", oauthServer("provider: custom\n        flow: client_credentials\n        client_id: id\n        client_secret_file: /nonexistent/cs\n        token_url: https://idp.example.com/token"), []want{
			{12, "servers.o.auth.oauth.client_secret_file", "cannot read"}}},
		{"oauth default flow without secret is pkce", oauthServer("provider: google"), []want{{8, "servers.o.auth.oauth.client_id", "required for flow pkce"}}},
		{"oauth redirect http", oauthServer("provider: google\n        client_id: id\n        redirect_url: http://helpdesk.example.com/cb"), []want{{11, "servers.o.auth.oauth.redirect_url", "must use https"}}},
		{"oauth sasl", oauthServer("provider: google\n        client_id: id\n        sasl: plain"), []want{{11, "servers.o.auth.oauth.sasl", `unknown SASL mechanism "plain"`}}},
		{"oauth with password_env", strings.Replace(oauthServer("provider: google\n        client_id: id"), "method: oauth2", "method: oauth2\n      password_env: X", 1), []want{{8, "servers.o.auth.password_env", "not used with method oauth2"}}},
		{"password with oauth block", strings.Replace(imapServer, "password_env: SUPPORT_PW", "password_env: SUPPORT_PW\n      oauth: {provider: google}", 1), []want{{9, "servers.support.auth.oauth", "only used with method oauth2"}}},
		{"ews client credentials impersonate", `servers:
  - name: ex
    protocol: ews
    ews_url: https://outlook.office365.com/EWS/Exchange.asmx
    auth:
      method: oauth2
      oauth: {provider: microsoft, tenant: contoso.com, flow: client_credentials, client_id: id, client_secret_env: CS}
`, []want{{2, "servers.ex.impersonate", "required for ews with flow client_credentials"}}},
		{"database driver", "database:\n  driver: mysql\n", []want{{2, "database.driver", `unknown driver "mysql"`}}},
		{"postgres dsn", "database:\n  driver: postgres\n", []want{{1, "database.dsn", "required for driver postgres"}}},
		{"postgres password inline", "database:\n  driver: postgres\n  dsn: postgres://u:s3cret@db/mw\n", []want{{3, "database.dsn", "secrets are not allowed inline"}}},
		{"nats url password inline", "nats:\n  url: nats://u:s3cret@nats:4222\n", []want{{2, "nats.url", "secrets are not allowed inline"}}},
		{"nats stream", "nats:\n  stream: my.stream\n  subject_prefix: \"mail.>\"\n  replicas: 7\n", []want{
			{2, "nats.stream", "invalid stream name"}, {3, "nats.subject_prefix", "invalid subject prefix"}, {4, "nats.replicas", "between 1 and 5"}}},
		{"tls files", "nats:\n  tls:\n    ca_file: /nonexistent/ca.pem\n    key_file: /nonexistent/key.pem\n", []want{
			{2, "nats.tls.cert_file", "required with key_file"},
			{3, "nats.tls.ca_file", "cannot read: open /nonexistent/ca.pem"},
			{4, "nats.tls.key_file", "cannot read"}}},
		{"nats listen public", "nats:\n  listen: 0.0.0.0:4222\n", []want{{2, "nats.listen", "0.0.0.0:4222 is not a loopback address: anyone who can reach it could read and publish events; set nats.token_env, or nats.token_file"}}},
		{"nats listen all interfaces", "nats:\n  listen: \":4222\"\n", []want{{2, "nats.listen", "not a loopback address"}}},
		{"nats listen public with token env", "nats:\n  listen: 0.0.0.0:4222\n  token_env: NATS_TOKEN\n", nil},
		{"nats listen public with token file to create", "nats:\n  listen: 0.0.0.0:4222\n  token_file: /nonexistent-dir/nats.token\n", nil},
		{"nats listen public with url set", "nats:\n  url: nats://n1:4222\n  listen: 0.0.0.0:4222\n", nil},
		{"nats listen random port", "nats:\n  listen: 127.0.0.1:0\n", nil},
		{"nats listen garbage", "nats:\n  listen: localhost\n  token_env: not a name\n", []want{{2, "nats.listen", "want host:port"}, {3, "nats.token_env", "must name an environment variable"}}},
		{"nats listen bad port", "nats:\n  listen: 127.0.0.1:99999\n", []want{{2, "nats.listen", "invalid port"}}},
		{"nats both token sources", "nats:\n  token_env: T\n  token_file: /x\n", []want{{3, "nats.token_file", "set only one of token_env and token_file"}}},
		// A public listen without a token is not a load error: run logs it
		// and keeps fetching without the listener (TestAdminProblem).
		{"admin listen public", "admin:\n  listen: 0.0.0.0:8025\n", nil},
		{"admin listen all interfaces", "admin:\n  listen: :8025\n", nil},
		{"admin listen public with token", "admin:\n  listen: 0.0.0.0:8025\n  token_env: ADMIN_TOKEN\n", nil},
		{"admin listen off", "admin:\n  listen: \"off\"\n", nil},
		{"admin listen garbage", "admin:\n  listen: localhost\n", []want{{2, "admin.listen", "want host:port"}}},
		{"log", "log:\n  level: verbose\n  format: xml\n", []want{{2, "log.level", `unknown level "verbose"`}, {3, "log.format", `unknown format "xml"`}}},
		{"ticket pattern", "parser:\n  ticket_patterns: ['(', '#\\d+']\n  max_parts: -2\n", []want{
			{2, "parser.ticket_patterns[0]", "invalid regular expression"},
			{2, "parser.ticket_patterns[1]", "needs a capturing group"},
			{3, "parser.max_parts", "must be positive, got -2"}}},
		{"syntax error", "log:\n  level: info\n   format: json\n", []want{{3, "", "mapping values are not allowed"}}},
		{"x- keys are ignored", "x-defaults: &d {fetch_interval: 2m}\n" + imapServer, nil},
		{"x- keys only at the top", imapServer + "    x-note: hi\n", []want{{10, "servers.support.x-note", "unknown key"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, tc.yaml, nil)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			checkErrors(t, err, tc.want)
		})
	}
}

// oauthServer is an imaps server with auth.oauth written as given (the
// oauth keys start on line 8).
func oauthServer(oauth string) string {
	return `servers:
  - name: o
    protocol: imaps
    host: imap.example.com
    username: o@example.com
    auth:
      method: oauth2
      oauth:
        ` + oauth + "\n"
}

func TestAllErrorsAtOnce(t *testing.T) {
	_, err := load(t, `data_dir: ./d
natz: {}
servers:
  - name: a
    protocol: imaps
    host: h
    username: u
    auth:
      method: password
      password: hunter2
    fetch_interval: 5s
  - name: a
    protocol: pop3
    auth: {method: password, password_env: P}
database:
  driver: postgres
`, nil)
	checkErrors(t, err, []want{
		{2, "natz", "unknown key"},
		{10, "servers.a.auth.password", "secrets are not allowed inline"},
		{11, "servers.a.fetch_interval", "must be at least 10s"},
		{12, "servers.a.name", `duplicate server name "a" (first at line 4)`},
		{12, "servers.a.username", "required for method password"},
		{13, "servers.a.protocol", `unknown protocol "pop3"`},
		{15, "database.dsn", "required for driver postgres"},
	})
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error reveals the secret:\n%v", err)
	}
	// One line per error, each FILE:LINE: KEY: REASON.
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 7 || !strings.Contains(lines[0], "mailworker.yaml:2: natz: unknown key") {
		t.Errorf("Error() =\n%s", err)
	}
}

func TestInlineSecrets(t *testing.T) {
	const value = "Sup3rS3cret-value"
	tests := []struct {
		name, yaml string
		line       int
		key, hint  string
	}{
		{"password", strings.Replace(imapServer, "password_env: SUPPORT_PW", "password: "+value, 1), 8, "servers.support.auth.password", "use password_env or password_file"},
		{"password at server level", imapServer + "    password: " + value + "\n", 10, "servers.support.password", "use auth.password_env or auth.password_file"},
		{"client_secret", oauthServer("provider: google\n        client_id: id\n        client_secret: " + value), 11, "servers.o.auth.oauth.client_secret", "use client_secret_env or client_secret_file"},
		{"refresh_token", oauthServer("provider: google\n        client_id: id\n        refresh_token: " + value), 11, "servers.o.auth.oauth.refresh_token", "mailworker obtains and stores OAuth tokens itself"},
		{"access_token", oauthServer("provider: google\n        client_id: id\n        access_token: " + value), 11, "servers.o.auth.oauth.access_token", "mailworker obtains and stores OAuth tokens itself"},
		{"admin token", "admin:\n  token: " + value + "\n", 2, "admin.token", "use token_env or token_file"},
		{"secret", "admin:\n  secret: " + value + "\n", 2, "admin.secret", "use a *_env or *_file key"},
		{"secret as a mapping", imapServer + "    token:\n      value: " + value + "\n", 10, "servers.support.token", "use a *_env or *_file key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, tc.yaml, nil)
			checkErrors(t, err, []want{{tc.line, tc.key, "secrets are not allowed inline; " + tc.hint}})
			if strings.Contains(err.Error(), value) {
				t.Errorf("error reveals the secret: %v", err)
			}
		})
	}
}

func TestEnvOverrides(t *testing.T) {
	yaml := imapServer + `  - name: help-desk
    protocol: imap
    host: h
    username: u
    auth: {method: password, password_env: P}
`
	c, err := load(t, yaml, map[string]string{
		"MAILWORKER_NATS_URL":                            "nats://n1:4222,nats://n2:4222",
		"MAILWORKER_DATABASE_DRIVER":                     "postgres",
		"MAILWORKER_DATABASE_DSN":                        "postgres://mw:pw@db/mw", // allowed from the environment
		"MAILWORKER_DATA_DIR":                            "/var/lib/mailworker",
		"MAILWORKER_NATS_TLS_SERVER_NAME":                "nats.example.com",
		"MAILWORKER_PARSER_TICKET_PATTERNS":              `\[T(\d+)\], #(\d+)`,
		"MAILWORKER_SERVERS_SUPPORT_FETCH_INTERVAL":      "3",
		"MAILWORKER_SERVERS_SUPPORT_AFTER_FETCH":         "move:Done",
		"MAILWORKER_SERVERS_HELP_DESK_ADDRESSES":         "a@example.com, b@example.com",
		"MAILWORKER_SERVERS_HELP_DESK_AUTH_PASSWORD_ENV": "HD_PW",
		"MAILWORKER_SERVERS_HELP_DESK_EMAIL_DEBUG":       "true",
		"MAILWORKER_SERVERS_HELP_DESK_TLS_CA_FILE":       "", // empty: no override
		"MAILWORKER_SERVERS_NOSUCH_HOST":                 "ignored",
		"MAILWORKER_NATS_LISTEN":                         "127.0.0.1:0",
	})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.NATS.URL != "nats://n1:4222,nats://n2:4222" || c.Database.Driver != "postgres" || c.Database.DSN != "postgres://mw:pw@db/mw" ||
		c.DataDir != "/var/lib/mailworker" || c.NATS.TLS.ServerName != "nats.example.com" || c.NATS.Listen != "127.0.0.1:0" {
		t.Errorf("top-level overrides: %+v", c)
	}
	if got := c.Parser.TicketPatterns; len(got) != 2 || got[0] != `\[T(\d+)\]` || got[1] != `#(\d+)` {
		t.Errorf("ticket_patterns = %q", got)
	}
	s, _ := c.Server("support")
	if s.FetchInterval.D() != 3*time.Minute || s.AfterFetch.String() != "move:Done" {
		t.Errorf("support: interval %v after %v", s.FetchInterval, s.AfterFetch)
	}
	h, _ := c.Server("help-desk")
	if len(h.Addresses) != 2 || h.Addresses[1] != "b@example.com" || h.Auth.PasswordEnv != "HD_PW" || !h.EmailDebug || h.Auth.Method != config.AuthPassword {
		t.Errorf("help-desk: %+v", h)
	}
	if len(c.Servers) != 2 {
		t.Errorf("environment created servers: %d", len(c.Servers))
	}
}

func TestEnvOverrideErrorsNameTheVariable(t *testing.T) {
	_, err := load(t, imapServer, map[string]string{
		"MAILWORKER_SERVERS_SUPPORT_FETCH_INTERVAL": "2s",
		"MAILWORKER_NATS_REPLICAS":                  "three",
		"MAILWORKER_ADMIN_LISTEN":                   "9000", // malformed: a public listen is no longer a load error
	})
	var errs config.Errors
	if !errors.As(err, &errs) || len(errs) != 3 {
		t.Fatalf("Load error = %v, want 3 config.Errors", err)
	}
	wantEnv := map[string]string{
		"nats.replicas":                  "MAILWORKER_NATS_REPLICAS",
		"servers.support.fetch_interval": "MAILWORKER_SERVERS_SUPPORT_FETCH_INTERVAL",
		"admin.listen":                   "MAILWORKER_ADMIN_LISTEN",
	}
	for _, e := range errs {
		if e.Env != wantEnv[e.Key] || e.Line != 0 {
			t.Errorf("error %v: Env %q Line %d, want Env %q", e, e.Env, e.Line, wantEnv[e.Key])
		}
		if !strings.HasPrefix(e.Error(), "env "+e.Env+": "+e.Key+": ") {
			t.Errorf("Error() = %q", e.Error())
		}
	}
}

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{
		"nats.url":                         "MAILWORKER_NATS_URL",
		"data_dir":                         "MAILWORKER_DATA_DIR",
		"servers.help-desk.fetch_interval": "MAILWORKER_SERVERS_HELP_DESK_FETCH_INTERVAL",
		"servers.a.auth.oauth.client_id":   "MAILWORKER_SERVERS_A_AUTH_OAUTH_CLIENT_ID",
	} {
		if got := config.EnvName(in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMergeKeys(t *testing.T) {
	c, err := load(t, `servers:
  - &base
    name: one
    protocol: imaps
    host: imap.example.com
    username: one@example.com
    auth: {method: password, password_env: P1}
    fetch_interval: 2m
  - <<: *base
    name: two
    username: two@example.com
`, map[string]string{"MAILWORKER_SERVERS_TWO_HOST": "other.example.com"})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	one, two := c.Servers[0], c.Servers[1]
	if two.Name != "two" || two.Username != "two@example.com" || two.FetchInterval != one.FetchInterval || two.Auth.PasswordEnv != "P1" {
		t.Errorf("merged server = %+v", two)
	}
	if one.Host != "imap.example.com" || two.Host != "other.example.com" {
		t.Errorf("hosts %q %q: the override must touch only server two", one.Host, two.Host)
	}
}

func TestValidateInCode(t *testing.T) {
	c := &config.Config{Servers: []config.Server{{
		Name: "x", Protocol: config.ProtocolIMAPS, Host: "h", Username: "u",
		Auth:          config.Auth{Method: config.AuthPassword, PasswordEnv: "P"},
		FetchInterval: config.Duration(time.Second),
	}}}
	err := c.Validate()
	var errs config.Errors
	if !errors.As(err, &errs) || len(errs) != 1 {
		t.Fatalf("Validate = %v, want one error", err)
	}
	if got := errs[0].Error(); got != "servers.x.fetch_interval: must be at least 10s, got 1s (a bare number means minutes)" {
		t.Errorf("Error() = %q", got)
	}
	if c.Servers[0].Port != 0 {
		t.Errorf("Validate changed the config (port %d)", c.Servers[0].Port)
	}
	c.Servers[0].FetchInterval = 0 // zero means the default in code
	if err := c.Validate(); err != nil {
		t.Errorf("Validate with defaults: %v", err)
	}
}

func TestSecrets(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"PW": "from-env", "CS": "client-secret", "TOK": "admin-token"}
	getenv := func(k string) string { return env[k] }

	s := config.Server{Name: "support", Auth: config.Auth{PasswordEnv: "PW"}}
	if v, err := s.PasswordFrom(getenv); err != nil || v.Reveal() != "from-env" {
		t.Errorf("PasswordFrom env = %v, %v", v.Reveal(), err)
	}
	s.Auth = config.Auth{PasswordFile: pwFile}
	if v, err := s.PasswordFrom(getenv); err != nil || v.Reveal() != "from-file" {
		t.Errorf("PasswordFrom file = %q, %v", v.Reveal(), err)
	}
	s.Auth = config.Auth{PasswordEnv: "UNSET"}
	_, err := s.PasswordFrom(getenv)
	if !errors.Is(err, config.ErrNoSecret) || !strings.Contains(err.Error(), "server support: auth.password_env: environment variable UNSET") {
		t.Errorf("PasswordFrom unset = %v", err)
	}
	s.Auth = config.Auth{PasswordFile: empty}
	if _, err := s.PasswordFrom(getenv); !errors.Is(err, config.ErrNoSecret) {
		t.Errorf("PasswordFrom empty file = %v", err)
	}
	s.Auth = config.Auth{PasswordFile: filepath.Join(dir, "missing")}
	if _, err := s.PasswordFrom(getenv); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "auth.password_file") {
		t.Errorf("PasswordFrom missing file = %v", err)
	}
	o := config.OAuth{ClientSecretEnv: "CS"}
	if v, err := o.ClientSecretFrom(getenv); err != nil || v.Reveal() != "client-secret" {
		t.Errorf("ClientSecretFrom = %v", err)
	}
	if _, err := (&config.OAuth{}).ClientSecretFrom(getenv); !errors.Is(err, config.ErrNoSecret) {
		t.Errorf("ClientSecretFrom public client = %v", err)
	}
	a := config.Admin{TokenEnv: "TOK"}
	if v, err := a.TokenFrom(getenv); err != nil || v.Reveal() != "admin-token" {
		t.Errorf("TokenFrom = %v", err)
	}
	t.Setenv("MW_TEST_PW", "process-env")
	s.Auth = config.Auth{PasswordEnv: "MW_TEST_PW"}
	if v, err := s.Password(); err != nil || v.Reveal() != "process-env" {
		t.Errorf("Password = %v", err)
	}
}

// TestAdminProblem: the admin listener's runtime problems (no readable
// token, a public listen without one) are reported by Admin.Problem, never
// by Validate, so that `run` can keep fetching without the listener.
func TestAdminProblem(t *testing.T) {
	getenv := func(k string) string { return map[string]string{"TOK": "t"}[k] }
	for _, c := range []struct {
		a    config.Admin
		want string // "" for no problem
	}{
		{config.Admin{Listen: "127.0.0.1:8025"}, ""},
		{config.Admin{Listen: "localhost:8025"}, ""},
		{config.Admin{Listen: "off"}, ""},
		{config.Admin{Listen: "0.0.0.0:8025"}, "not a loopback address"},
		{config.Admin{Listen: ":8025"}, "not a loopback address"},
		{config.Admin{Listen: "0.0.0.0:8025", TokenEnv: "TOK"}, ""},
		{config.Admin{Listen: "127.0.0.1:8025", TokenEnv: "UNSET"}, "admin.token_env: environment variable UNSET is empty or unset"},
		{config.Admin{Listen: "127.0.0.1:8025", TokenFile: "/nonexistent/admin.token"}, "admin.token_file"},
	} {
		err := c.a.Problem(getenv)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: Problem = %v; want none", c.a, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%+v: Problem = %v; want %q", c.a, err, c.want)
		}
		cfg := &config.Config{Admin: c.a}
		if err := cfg.Validate(); err != nil {
			t.Errorf("%+v: Validate = %v; admin runtime problems are not load errors", c.a, err)
		}
	}
}

func TestServerHelpers(t *testing.T) {
	c := &config.Config{Servers: []config.Server{
		{Name: "a", Username: "User@Example.com"},
		{Name: "b", Mailbox: "Box@Example.com", Username: "x"},
		{Name: "c", Addresses: []string{"First@Example.com", "second@example.com"}, Mailbox: "m"},
		{Name: "d", Protocol: config.ProtocolEWS, Impersonate: "Shared@Example.com"},
	}}
	for name, want := range map[string]string{"a": "user@example.com", "b": "box@example.com", "c": "first@example.com", "d": "shared@example.com"} {
		s, ok := c.Server(name)
		if !ok {
			t.Fatalf("Server(%q) not found", name)
		}
		if got := s.MailboxID(); got != want {
			t.Errorf("%s: MailboxID = %q, want %q", name, got, want)
		}
	}
	if _, ok := c.Server("zzz"); ok {
		t.Error(`Server("zzz") found`)
	}
	a, b := c.Servers[2], c.Servers[2]
	b.Addresses = []string{"First@Example.com", "second@example.com"}
	if !config.Equal(a, b) {
		t.Error("Equal: copies with equal lists differ")
	}
	b.Addresses[1] = "third@example.com"
	if config.Equal(a, b) {
		t.Error("Equal: different addresses compare equal")
	}
}

func TestExampleFileLoads(t *testing.T) {
	c, err := config.LoadWith("../mailworker.example.yaml", config.LoadOptions{Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatalf("Load example: %v", err)
	}
	if len(c.Servers) != 2 {
		t.Errorf("example has %d active servers, want 2", len(c.Servers))
	}
	// The env vars the example references resolve.
	env := map[string]string{"SUPPORT_IMAP_PASSWORD": "a", "SALES_IMAP_PASSWORD": "b"}
	for _, s := range c.Servers {
		if _, err := s.PasswordFrom(func(k string) string { return env[k] }); err != nil {
			t.Errorf("server %s: %v", s.Name, err)
		}
	}

	// Uncomment the commented-out servers and production blocks: they must
	// load too.
	raw, err := os.ReadFile("../mailworker.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pw := filepath.Join(dir, "exchange-password")
	if err := os.WriteFile(pw, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out []string
	inServers := false
	for _, line := range strings.Split(string(raw), "\n") {
		if line == "servers:" {
			inServers = true
		}
		if inServers && strings.HasPrefix(line, "  # ") && !strings.HasPrefix(strings.TrimSpace(line[4:]), "#") &&
			(strings.HasPrefix(line, "  # - ") || strings.HasPrefix(line, "  #   ")) {
			line = "  " + line[4:]
		}
		out = append(out, strings.ReplaceAll(line, "/run/secrets/exchange-password", pw))
	}
	full := filepath.Join(dir, "full.yaml")
	if err := os.WriteFile(full, []byte(strings.Join(out, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = config.LoadWith(full, config.LoadOptions{Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatalf("Load example with all servers: %v", err)
	}
	var names []string
	for _, s := range c.Servers {
		names = append(names, s.Name)
	}
	if got := strings.Join(names, ","); got != "support,sales,gmail,o365,exchange,graph" {
		t.Errorf("servers = %s", got)
	}
}

func TestMergeBomb(t *testing.T) {
	// Each level merges the previous one ten times: 10^8 expansions if
	// nothing stopped them.
	yaml := "x-0: &l0 {host: h}\n"
	for i := 1; i <= 8; i++ {
		yaml += fmt.Sprintf("x-%d: &l%d {<<: [", i, i)
		for j := 0; j < 10; j++ {
			if j > 0 {
				yaml += ", "
			}
			yaml += fmt.Sprintf("*l%d", i-1)
		}
		yaml += "]}\n"
	}
	yaml += "servers:\n  - <<: *l8\n    name: bomb\n"
	_, err := load(t, yaml, nil)
	if err == nil || !strings.Contains(err.Error(), "too many values") {
		t.Fatalf("Load = %v, want a too-many-values error", err)
	}
}
