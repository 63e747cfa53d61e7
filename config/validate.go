package config

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/mail"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

var (
	serverNameRE = regexp.MustCompile(`^[a-z0-9_-]+$`)
	envVarRE     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	streamRE     = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	tokenRE      = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	headerRE     = regexp.MustCompile(`^[!-9;-~]+$`) // RFC 5322 field name: printable, no colon
)

// Validate checks c and returns every problem found as Errors, or nil.
// Zero fields count as their defaults (c itself is not changed), so a Config
// built in code only needs the fields it cares about. Errors carry file and
// line when c came from Load.
//
// Rules, by key:
//   - servers: name unique and [a-z0-9_-]+; protocol imaps, imap, ews or
//     graph; host for imap(s); ews_url for ews (https, or http on a loopback
//     host); mailbox for graph; fetch_interval at least 10s (MinFetchInterval);
//     stall_timeout between 5s and 30m;
//     max_per_fetch positive; addresses valid mail addresses;
//     new_request_allow entries addresses or *@domain; trusted_authserv_ids
//     non-empty tokens without white space, ';', quotes or parentheses.
//   - auth: method valid for the protocol (password: imap(s), ews; ntlm: ews;
//     oauth2: all; graph needs oauth2); password and ntlm need a username and
//     exactly one of password_env / password_file; oauth2 needs a provider
//     (google, microsoft, custom), a known flow, client_id (except manual), a
//     client secret reference for authorization_code and client_credentials,
//     token_url (custom) and auth_url (custom with a code flow).
//   - database: driver sqlite or postgres; postgres needs a dsn. A password
//     inside nats.url or database.dsn written in the file is refused (set the
//     whole value through the environment instead).
//   - admin: listen is host:port or off; at most one of token_env and
//     token_file. A token that cannot be read, or a non-loopback listen
//     without one, is not an error here: `run` logs it and fetches without
//     the admin listener (see Admin.Problem; check-config warns).
//   - nats: listen is host:port; with the embedded server (no url), a
//     non-loopback listen needs token_env or token_file (a token_file that
//     does not exist yet is allowed: run creates it).
//   - files named by *_file keys (TLS, NATS credentials, secrets) must be
//     readable; *_env keys must be valid variable names.
func (c *Config) Validate() error {
	cp := *c
	cp.Servers = slices.Clone(c.Servers)
	cp.SetDefaults()
	v := &validator{c: &cp, orig: c}
	v.config()
	if len(v.errs) == 0 {
		return nil
	}
	sortErrors(v.errs)
	return v.errs
}

// sortErrors orders errs by line; those without a line (environment, code)
// come last, in the order found.
func sortErrors(errs Errors) {
	sort.SliceStable(errs, func(i, j int) bool {
		li, lj := errs[i].Line, errs[j].Line
		if li == 0 {
			li = math.MaxInt
		}
		if lj == 0 {
			lj = math.MaxInt
		}
		return li < lj
	})
}

type validator struct {
	c    *Config // with defaults
	orig *Config // as given
	errs Errors
}

// add records a problem at the canonical path (servers by index).
func (v *validator) add(path, format string, args ...any) {
	e := &Error{File: v.c.Path, Key: displayKey(v.c.Servers, path), Reason: fmt.Sprintf(format, args...)}
	for p := path; p != ""; p = parent(p) {
		if s, ok := v.c.src[p]; ok {
			e.Line, e.Env = s.line, s.env
			break
		}
	}
	v.errs = append(v.errs, e)
}

// set reports whether the key at path was written in the file or environment.
func (v *validator) set(path string) bool {
	_, ok := v.c.src[path]
	return ok
}

// fromFile reports whether the key at path was written in the file itself.
func (v *validator) fromFile(path string) bool {
	s, ok := v.c.src[path]
	return ok && s.env == ""
}

func parent(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

// displayKey turns "servers[2].x" into "servers.<name>.x" when server 2
// has a valid name.
func displayKey(servers []Server, path string) string {
	rest, ok := strings.CutPrefix(path, "servers[")
	if !ok {
		return path
	}
	idx, tail, ok := strings.Cut(rest, "]")
	i, err := strconv.Atoi(idx)
	if !ok || err != nil || i >= len(servers) {
		return path
	}
	name := servers[i].Name
	if !serverNameRE.MatchString(name) {
		return path
	}
	return "servers." + name + tail
}

func (v *validator) config() {
	c := v.c
	if strings.TrimSpace(c.DataDir) == "" {
		v.add("data_dir", "must not be empty")
	}
	switch c.Database.Driver {
	case "sqlite":
	case "postgres":
		if c.Database.DSN == "" {
			v.add("database.dsn", "required for driver postgres, e.g. postgres://mailworker@127.0.0.1:5432/mailworker?sslmode=disable")
		}
	default:
		v.add("database.driver", "unknown driver %q (want sqlite or postgres)", c.Database.Driver)
	}
	if v.fromFile("database.dsn") && dsnHasPassword(c.Database.DSN) {
		v.add("database.dsn", "secrets are not allowed inline; set the whole dsn in %s, or use PGPASSWORD/PGPASSFILE", EnvName("database.dsn"))
	}
	v.nats()
	v.parser()
	v.admin()
	if c.Secrets.KeyFile != "" {
		// The key file is created when missing, so only its directory must exist.
		if _, err := os.Stat(c.Secrets.KeyFile); err != nil && !os.IsNotExist(err) {
			v.add("secrets.key_file", "cannot read: %v", err)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.add("log.level", "unknown level %q (want debug, info, warn or error)", c.Log.Level)
	}
	switch c.Log.Format {
	case "", "text", "json":
	default:
		v.add("log.format", "unknown format %q (want text or json)", c.Log.Format)
	}
	firstLine := map[string]int{}
	for i := range c.Servers {
		p := fmt.Sprintf("servers[%d]", i)
		name := c.Servers[i].Name
		if j, dup := firstLine[name]; dup && name != "" {
			where := fmt.Sprintf("servers[%d]", j)
			if s, ok := c.src[where+".name"]; ok && s.line > 0 {
				where = "line " + strconv.Itoa(s.line)
			}
			v.add(p+".name", "duplicate server name %q (first at %s)", name, where)
		} else {
			firstLine[name] = i
		}
		v.server(p, &c.Servers[i], &v.orig.Servers[i])
	}
}

func (v *validator) nats() {
	n := &v.c.NATS
	if v.fromFile("nats.url") && urlsHavePassword(n.URL) {
		v.add("nats.url", "secrets are not allowed inline; use credentials_file, or set the whole url in %s", EnvName("nats.url"))
	}
	v.envName("nats.token_env", n.TokenEnv)
	if n.TokenEnv != "" && n.TokenFile != "" {
		v.add("nats.token_file", "set only one of token_env and token_file")
	}
	if n.TokenFile != "" {
		// A missing file is created by `run`; an existing one must be readable.
		if _, err := os.Stat(n.TokenFile); err == nil {
			v.readable("nats.token_file", n.TokenFile)
		} else if !errors.Is(err, fs.ErrNotExist) {
			v.add("nats.token_file", "%v", err)
		}
	}
	listen := n.Listen
	if listen == "" {
		listen = DefaultNATSListen
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		v.add("nats.listen", "want host:port, e.g. 127.0.0.1:4222 (or 127.0.0.1:0 for a free port): %v", err)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		v.add("nats.listen", "invalid port %q", port)
	} else if n.URL == "" && !isLoopback(host) && n.TokenEnv == "" && n.TokenFile == "" {
		v.add("nats.listen", "%s is not a loopback address: anyone who can reach it could read and publish events; "+
			"set nats.token_env, or nats.token_file (created with a random token when missing), so clients need a token", listen)
	}
	if !streamRE.MatchString(n.Stream) {
		v.add("nats.stream", "invalid stream name %q (letters, digits, _ and -)", n.Stream)
	}
	for _, tok := range strings.Split(n.SubjectPrefix, ".") {
		if !tokenRE.MatchString(tok) {
			v.add("nats.subject_prefix", "invalid subject prefix %q (dot-separated tokens of letters, digits, _ and -)", n.SubjectPrefix)
			break
		}
	}
	if n.Replicas < 1 || n.Replicas > 5 {
		v.add("nats.replicas", "must be between 1 and 5, got %d", n.Replicas)
	}
	if n.AttachmentsBucket != "" && !streamRE.MatchString(n.AttachmentsBucket) {
		v.add("nats.attachments_bucket", "invalid bucket name %q (letters, digits, _ and -)", n.AttachmentsBucket)
	}
	v.readable("nats.credentials_file", n.CredentialsFile)
	v.tls("nats.tls", &n.TLS)
}

func (v *validator) parser() {
	p := &v.c.Parser
	for key, n := range map[string]int64{
		"parser.max_message_bytes": p.MaxMessageBytes,
		"parser.max_parts":         int64(p.MaxParts),
		"parser.max_depth":         int64(p.MaxDepth),
		"parser.max_header_bytes":  int64(p.MaxHeaderBytes),
		"parser.max_body_bytes":    int64(p.MaxBodyBytes),
	} {
		if n < 0 {
			v.add(key, "must be positive, got %d", n)
		}
	}
	for i, pat := range p.TicketPatterns {
		key := fmt.Sprintf("parser.ticket_patterns[%d]", i)
		re, err := regexp.Compile(pat)
		switch {
		case err != nil:
			v.add(key, "invalid regular expression: %v", err)
		case re.NumSubexp() < 1:
			v.add(key, "needs a capturing group for the request number, e.g. ##(\\d+)##")
		}
	}
	if !headerRE.MatchString(p.LoopHeader) {
		v.add("parser.loop_header", "invalid header name %q", p.LoopHeader)
	}
}

func (v *validator) admin() {
	a := &v.c.Admin
	v.envName("admin.token_env", a.TokenEnv)
	if a.TokenEnv != "" && a.TokenFile != "" {
		v.add("admin.token_file", "set only one of token_env and token_file")
	}
	if a.Listen == "off" {
		return
	}
	_, port, err := net.SplitHostPort(a.Listen)
	if err != nil {
		v.add("admin.listen", "want host:port (e.g. 127.0.0.1:8025) or off, got %q", a.Listen)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		v.add("admin.listen", "invalid port %q", port)
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (v *validator) server(p string, s, orig *Server) {
	if s.Name == "" {
		v.add(p+".name", "required")
	} else if !serverNameRE.MatchString(s.Name) {
		v.add(p+".name", "invalid name %q (lower-case letters, digits, _ and -)", s.Name)
	}
	switch s.Protocol {
	case ProtocolIMAPS, ProtocolIMAP:
		if s.Host == "" {
			v.add(p+".host", "required for protocol %s", s.Protocol)
		}
		if s.Port < 1 || s.Port > 65535 {
			v.add(p+".port", "must be between 1 and 65535, got %d", s.Port)
		}
	case ProtocolEWS:
		if s.EWSURL == "" {
			v.add(p+".ews_url", "required for protocol ews, e.g. https://mail.example.com/EWS/Exchange.asmx")
		} else {
			v.url(p+".ews_url", s.EWSURL)
		}
		if s.Impersonate != "" {
			v.address(p+".impersonate", s.Impersonate)
		}
	case ProtocolGraph:
		if s.Mailbox == "" {
			v.add(p+".mailbox", "required for protocol graph (the mailbox's address or id)")
		}
		if s.GraphURL != "" {
			v.url(p+".graph_url", s.GraphURL)
		}
	case "":
		v.add(p+".protocol", "required (imaps, imap, ews or graph)")
	default:
		v.add(p+".protocol", "unknown protocol %q (want imaps, imap, ews or graph)", s.Protocol)
	}
	v.tls(p+".tls", &s.TLS)
	for i, a := range s.Addresses {
		v.address(fmt.Sprintf("%s.addresses[%d]", p, i), a)
	}
	for i, a := range s.NewRequestAllow {
		key := fmt.Sprintf("%s.new_request_allow[%d]", p, i)
		if dom, ok := strings.CutPrefix(a, "*@"); ok {
			if _, err := mail.ParseAddress("x@" + dom); err != nil || dom == "" || strings.ContainsAny(dom, " *@") {
				v.add(key, "invalid domain in %q (want address or *@domain)", a)
			}
		} else if !validAddress(a) {
			v.add(key, "invalid entry %q (want address or *@domain)", a)
		}
	}
	for i, id := range s.TrustedAuthservIDs {
		if !validAuthservID(id) {
			v.add(fmt.Sprintf("%s.trusted_authserv_ids[%d]", p, i), "invalid authserv-id %q (want a host name such as mx.example.com, as written first in the Authentication-Results fields)", id)
		}
	}
	if s.FetchInterval.D() < MinFetchInterval || (orig.FetchInterval == 0 && v.set(p+".fetch_interval")) {
		v.add(p+".fetch_interval", "must be at least %s, got %s (a bare number means minutes)", MinFetchInterval, orig.FetchInterval)
	}
	if d := s.StallTimeout.D(); d < MinStallTimeout || d > MaxStallTimeout || (orig.StallTimeout == 0 && v.set(p+".stall_timeout")) {
		v.add(p+".stall_timeout", "must be between %s and %s, got %s (a bare number means minutes)", MinStallTimeout, MaxStallTimeout, orig.StallTimeout)
	}
	if s.MaxPerFetch < 1 || (orig.MaxPerFetch == 0 && v.set(p+".max_per_fetch")) {
		v.add(p+".max_per_fetch", "must be positive, got %d", orig.MaxPerFetch)
	}
	v.auth(p+".auth", s)
}

func (v *validator) auth(p string, s *Server) {
	a := &s.Auth
	switch a.Method {
	case "":
		v.add(p+".method", "required (%s)", methodsFor(s.Protocol))
		return
	case AuthPassword:
		if s.Protocol == ProtocolGraph {
			v.add(p+".method", "method password is not possible with protocol graph (want oauth2)")
			return
		}
	case AuthNTLM:
		if s.Protocol != ProtocolEWS {
			v.add(p+".method", "method ntlm is only for protocol ews (want %s)", methodsFor(s.Protocol))
			return
		}
	case AuthOAuth2:
	default:
		v.add(p+".method", "unknown method %q (want %s)", a.Method, methodsFor(s.Protocol))
		return
	}
	v.envName(p+".password_env", a.PasswordEnv)
	if a.Method == AuthOAuth2 {
		if a.PasswordEnv != "" {
			v.add(p+".password_env", "not used with method oauth2")
		}
		if a.PasswordFile != "" {
			v.add(p+".password_file", "not used with method oauth2")
		}
		v.oauth(p+".oauth", s)
		return
	}
	srv := strings.TrimSuffix(p, ".auth")
	if s.Username == "" {
		v.add(srv+".username", "required for method %s", a.Method)
	}
	switch {
	case a.PasswordEnv == "" && a.PasswordFile == "":
		v.add(p, "method %s needs password_env or password_file", a.Method)
	case a.PasswordEnv != "" && a.PasswordFile != "":
		v.add(p+".password_file", "set only one of password_env and password_file")
	default:
		v.readable(p+".password_file", a.PasswordFile)
	}
	if !reflect.ValueOf(a.OAuth).IsZero() {
		v.add(p+".oauth", "only used with method oauth2 (method is %s)", a.Method)
	}
}

func methodsFor(p Protocol) string {
	switch p {
	case ProtocolEWS:
		return "password, ntlm or oauth2"
	case ProtocolGraph:
		return "oauth2"
	}
	return "password or oauth2"
}

func (v *validator) oauth(p string, s *Server) {
	o := &s.Auth.OAuth
	srv := strings.TrimSuffix(p, ".auth.oauth")
	hasSecret := o.ClientSecretEnv != "" || o.ClientSecretFile != ""
	flow := o.Flow
	switch flow {
	case "":
		// As package oauth does: a confidential client uses the code flow,
		// a public one PKCE.
		flow = FlowPKCE
		if hasSecret {
			flow = FlowAuthorizationCode
		}
	case FlowAuthorizationCode, FlowPKCE, FlowClientCredentials, FlowManual:
	default:
		v.add(p+".flow", "unknown flow %q (want authorization_code, pkce, client_credentials or manual)", o.Flow)
		return
	}
	codeFlow := flow == FlowAuthorizationCode || flow == FlowPKCE
	switch o.Provider {
	case ProviderGoogle:
		if s.Protocol == ProtocolGraph || s.Protocol == ProtocolEWS {
			v.add(p+".provider", "provider google cannot be used with protocol %s (want microsoft or custom)", s.Protocol)
		}
		if flow == FlowClientCredentials {
			v.add(p+".flow", "google has no client_credentials grant for Gmail; use pkce or authorization_code")
		}
	case ProviderMicrosoft:
		if flow == FlowClientCredentials {
			switch o.Tenant {
			case "organizations", "common", "consumers":
				v.add(p+".tenant", "flow client_credentials needs your tenant id or domain, not %q", o.Tenant)
			}
		}
	case ProviderCustom:
		if o.TokenURL == "" {
			v.add(p+".token_url", "required for provider custom")
		}
		if codeFlow && o.AuthURL == "" {
			v.add(p+".auth_url", "required for provider custom with flow %s", flow)
		}
	case "":
		v.add(p+".provider", "required (google, microsoft or custom)")
	default:
		v.add(p+".provider", "unknown provider %q (want google, microsoft or custom)", o.Provider)
	}
	if o.ClientID == "" && flow != FlowManual {
		v.add(p+".client_id", "required for flow %s", flow)
	}
	v.envName(p+".client_secret_env", o.ClientSecretEnv)
	switch {
	case o.ClientSecretEnv != "" && o.ClientSecretFile != "":
		v.add(p+".client_secret_file", "set only one of client_secret_env and client_secret_file")
	case !hasSecret && (flow == FlowAuthorizationCode || flow == FlowClientCredentials):
		v.add(p, "flow %s needs client_secret_env or client_secret_file (use flow pkce for a public client)", flow)
	default:
		v.readable(p+".client_secret_file", o.ClientSecretFile)
	}
	for key, u := range map[string]string{"auth_url": o.AuthURL, "token_url": o.TokenURL, "revoke_url": o.RevokeURL, "redirect_url": o.RedirectURL} {
		if u != "" {
			v.url(p+"."+key, u)
		}
	}
	switch o.SASL {
	case "", "xoauth2", "oauthbearer":
	default:
		v.add(p+".sasl", "unknown SASL mechanism %q (want xoauth2 or oauthbearer)", o.SASL)
	}
	switch s.Protocol {
	case ProtocolIMAPS, ProtocolIMAP:
		if s.Username == "" {
			v.add(srv+".username", "required for protocol %s: the mailbox to log in as", s.Protocol)
		}
	case ProtocolEWS:
		if flow == FlowClientCredentials && s.Impersonate == "" {
			v.add(srv+".impersonate", "required for ews with flow client_credentials: the mailbox to act as")
		}
	}
}

func (v *validator) tls(p string, t *TLS) {
	v.readable(p+".ca_file", t.CAFile)
	v.readable(p+".cert_file", t.CertFile)
	v.readable(p+".key_file", t.KeyFile)
	if (t.CertFile == "") != (t.KeyFile == "") {
		if t.CertFile == "" {
			v.add(p+".cert_file", "required with key_file")
		} else {
			v.add(p+".key_file", "required with cert_file")
		}
	}
}

// readable checks that the file named at key can be opened. It never reads
// the content (it may be a secret).
func (v *validator) readable(key, path string) {
	if path == "" {
		return
	}
	f, err := os.Open(path)
	if err != nil {
		v.add(key, "cannot read: %v", err)
		return
	}
	if err := f.Close(); err != nil {
		v.add(key, "cannot read: %v", err)
	}
}

// envName checks that an *_env key holds a variable name, not the secret.
func (v *validator) envName(key, name string) {
	if name != "" && !envVarRE.MatchString(name) {
		v.add(key, "must name an environment variable (letters, digits and _), not hold the secret itself")
	}
}

// url checks an endpoint: https, or http on a loopback host (tests, local
// redirects).
func (v *validator) url(key, raw string) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		v.add(key, "invalid URL %q", raw)
		return
	}
	if u.User != nil {
		v.add(key, "must not contain credentials")
		return
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			v.add(key, "must use https (http is only accepted for loopback hosts)")
		}
	default:
		v.add(key, "must be an https URL, got scheme %q", u.Scheme)
	}
}

func (v *validator) address(key, a string) {
	if !validAddress(a) {
		v.add(key, "invalid mail address %q", a)
	}
}

// validAddress accepts a bare addr-spec (RFC 5322 section 3.4.1) without
// display name or angle brackets.
func validAddress(a string) bool {
	pa, err := mail.ParseAddress(a)
	return err == nil && pa.Name == "" && pa.Address == a && strings.Contains(a, "@")
}

func dsnHasPassword(dsn string) bool {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			return true
		}
	}
	for _, f := range strings.Fields(dsn) {
		if strings.HasPrefix(strings.ToLower(f), "password=") {
			return true
		}
	}
	return false
}

func urlsHavePassword(urls string) bool {
	for _, s := range strings.Split(urls, ",") {
		if u, err := url.Parse(strings.TrimSpace(s)); err == nil && u.User != nil {
			return true // user:pass or a bare token
		}
	}
	return false
}

// validAuthservID reports whether id can be an authserv-id as RFC 8601
// writes it (a token, in practice a host name).
func validAuthservID(id string) bool {
	if id == "" || len(id) > 255 {
		return false
	}
	for _, c := range id {
		if c <= ' ' || c == 0x7f || strings.ContainsRune(`;"()\,=`, c) {
			return false
		}
	}
	return true
}
