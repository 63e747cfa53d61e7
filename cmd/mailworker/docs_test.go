package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/fetcher/exchangetest"
	"github.com/mailworker/mailworker/imaptest"
	"github.com/mailworker/mailworker/oauth/oauthtest"
	"github.com/mailworker/mailworker/storage"
	"github.com/mailworker/mailworker/storage/storagetest"
	"github.com/mailworker/mailworker/worker"
)

// The docs walk: every fenced ```yaml (or ```yml) block of README.md and
// docs/*.md, and mailworker.example.yaml, is run through the built binary,
// the way a user copies it.
//
//   - A block with a top-level servers: key is a whole configuration. It is
//     written verbatim as mailworker.yaml into an empty directory, which is
//     the working directory of every command (so ./data is the default
//     data_dir, as for a user).
//   - Any other block is a fragment, merged into the README's minimal
//     configuration (the block after "A minimal configuration"): a mapping
//     of top-level keys (database:, nats:, admin: …) replaces those keys;
//     a mapping of server keys (auth: …, as the README's OAuth block shows
//     it, indented under a server) replaces those keys of the minimal
//     configuration's server; a list of server entries is appended to its
//     servers. The merged tree is written as mailworker.yaml.
//
// Nothing in the file is edited. What must differ on this machine comes
// from the environment overrides a user has too (MAILWORKER_<KEY PATH>):
//
//   - hosts and ports: imap/imaps servers point at a private Dovecot
//     (package imaptest) whose user is the block's username with the
//     password its password_env names, trusting Dovecot's CA (tls.ca_file);
//     EWS servers with a password or NTLM point at exchangetest's EWS fake
//     (same user, password, folders) over TLS, trusting its certificate;
//     imap/imaps servers with delegated OAuth point at a Dovecot that
//     checks tokens with oauthtest, their token_url at oauthtest, and get
//     a token through `oauth set-token` (as docs/oauth.md shows);
//     Graph servers with app-only OAuth (client_credentials) point at
//     exchangetest's Graph fake, their token_url at a small endpoint that
//     gives the fake's token for the secret client_secret_env names;
//     other EWS, Graph and OAuth token URLs point at a closed loopback
//     port; the embedded NATS listens on 127.0.0.1:0 (never the system's
//     4222), the admin listener on a free loopback port; a nats.url is
//     left alone (only check-config sees it);
//   - secrets: every *_env variable a block names is set; every *_file a
//     block names that does not exist here (/etc/mailworker/…) is replaced
//     by a file in the temporary directory (the Dovecot password for an
//     IMAP password_file, a 32-byte hex key for secrets.key_file, a random
//     string otherwise);
//   - PostgreSQL: MAILWORKER_DATABASE_DSN, as the README says, naming a
//     schema of its own (package storagetest);
//   - fetch_interval: 10s (the least an admin's configuration accepts), so
//     that two intervals pass quickly.
//
// Then check-config must pass. For a whole configuration, test-connection
// must pass for every server the test gives a mailbox (below), and it is
// run: run must
// keep running for at least two fetch intervals (a second run shows in
// status), an IMAP server with a password (and an EWS server pointed at
// the fake) must actually fetch the message seeded into its folder
// (status: an event published or suppressed, a successful run), status
// must work against the running worker, and SIGTERM must stop it with
// status 0.
//
// A block that documents something deliberately invalid is marked in the
// doc with <!-- docs-test: skip REASON --> on the line before its fence.

// docBlock is one fenced YAML block of a doc.
type docBlock struct {
	file string // relative to the repository root
	line int    // line of the opening fence
	text string // the block's lines, fence indentation removed
	skip string // reason from a docs-test: skip marker
}

func (b docBlock) name() string { return fmt.Sprintf("%s:%d", b.file, b.line) }

var (
	fenceRE      = regexp.MustCompile("^(\\s*)(```+|~~~+)\\s*([A-Za-z0-9_+-]*)")
	docsSkipRE   = regexp.MustCompile(`<!--\s*docs-test:\s*skip\b\s*(.*?)\s*-->`)
	repoRoot     = filepath.Join("..", "..")
	docsInterval = 10 * time.Second
)

// docYAMLBlocks returns every ```yaml / ```yml block of README.md and
// docs/*.md.
func docYAMLBlocks(t *testing.T) []docBlock {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append([]string{filepath.Join(repoRoot, "README.md")}, files...)
	var out []docBlock
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(repoRoot, f)
		bs, err := yamlBlocksOf(rel, data)
		if err != nil {
			t.Error(err)
		}
		out = append(out, bs...)
	}
	// The README's first step is `cp mailworker.example.yaml
	// mailworker.yaml`: the example file is walked like a whole block.
	example, err := os.ReadFile(filepath.Join(repoRoot, "mailworker.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, docBlock{file: "mailworker.example.yaml", line: 1, text: string(example)})
	return out
}

// yamlBlocksOf returns the ```yaml / ```yml blocks of one Markdown file;
// the error names a skip marker without a reason.
func yamlBlocksOf(file string, data []byte) ([]docBlock, error) {
	var out []docBlock
	var errs []error
	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); i++ {
		m := fenceRE.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		indent, fence, lang := m[1], m[2], strings.ToLower(m[3])
		j := i + 1
		var body []string
		for ; j < len(lines); j++ {
			trimmed := strings.TrimSpace(lines[j])
			if strings.HasPrefix(trimmed, fence) && strings.Trim(trimmed, fence[:1]) == "" {
				break
			}
			body = append(body, strings.TrimPrefix(lines[j], indent))
		}
		if lang == "yaml" || lang == "yml" {
			b := docBlock{file: file, line: i + 1, text: strings.Join(body, "\n") + "\n"}
			for k := i - 1; k >= 0; k-- {
				if strings.TrimSpace(lines[k]) == "" {
					continue
				}
				if sm := docsSkipRE.FindStringSubmatch(lines[k]); sm != nil {
					b.skip = sm[1]
					if b.skip == "" {
						errs = append(errs, fmt.Errorf("%s: docs-test: skip without a reason", b.name()))
					}
				}
				break
			}
			out = append(out, b)
		}
		i = j
	}
	return out, errors.Join(errs...)
}

// minimalConfig is the README block after "A minimal configuration".
func minimalConfig(t *testing.T, blocks []docBlock) docBlock {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	for i, l := range lines {
		if !strings.Contains(l, "minimal configuration") {
			continue
		}
		for _, b := range blocks {
			if b.file == "README.md" && b.line > i+1 {
				return b
			}
		}
	}
	t.Fatal(`README.md: no yaml block after "A minimal configuration"; the docs test merges fragments into it`)
	return docBlock{}
}

// yamlKeys lists the yaml keys of struct type T.
func yamlKeys[T any]() map[string]bool {
	keys := map[string]bool{}
	rt := reflect.TypeFor[T]()
	for i := range rt.NumField() {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			keys[name] = true
		}
	}
	return keys
}

// docConfig builds the mailworker.yaml of block b: b itself when it is a
// whole configuration, else b merged into the minimal configuration (see
// the comment at the top). whole reports which.
func docConfig(t *testing.T, b, minimal docBlock) (data []byte, whole bool) {
	t.Helper()
	var frag yaml.Node
	if err := yaml.Unmarshal([]byte(b.text), &frag); err != nil {
		t.Fatalf("%s: not YAML: %v\n%s", b.name(), err, b.text)
	}
	if len(frag.Content) != 1 {
		t.Fatalf("%s: empty YAML block", b.name())
	}
	root := frag.Content[0]
	if root.Kind == yaml.MappingNode && mapGet(root, "servers") != nil {
		return []byte(b.text), true
	}
	var base yaml.Node
	if err := yaml.Unmarshal([]byte(minimal.text), &base); err != nil {
		t.Fatalf("%s: %v", minimal.name(), err)
	}
	top := base.Content[0]
	servers := mapGet(top, "servers")
	if servers == nil || servers.Kind != yaml.SequenceNode || len(servers.Content) == 0 {
		t.Fatalf("%s: the minimal configuration has no server", minimal.name())
	}
	switch {
	case root.Kind == yaml.MappingNode && allKeys(root, yamlKeys[config.Config]()):
		mapMerge(top, root)
	case root.Kind == yaml.MappingNode && allKeys(root, yamlKeys[config.Server]()):
		mapMerge(servers.Content[0], root)
	case root.Kind == yaml.SequenceNode:
		servers.Content = append(servers.Content, root.Content...)
	default:
		t.Fatalf("%s: cannot tell where this fragment goes (neither top-level keys, server keys nor a list of servers); "+
			"make it one of those, or mark it <!-- docs-test: skip REASON -->:\n%s", b.name(), b.text)
	}
	out, err := yaml.Marshal(&base)
	if err != nil {
		t.Fatal(err)
	}
	return out, false
}

func mapGet(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func allKeys(m *yaml.Node, keys map[string]bool) bool {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if !keys[m.Content[i].Value] {
			return false
		}
	}
	return len(m.Content) > 0
}

// mapMerge sets every key of src in dst (replacing the value when present).
func mapMerge(dst, src *yaml.Node) {
	for i := 0; i+1 < len(src.Content); i += 2 {
		k, v := src.Content[i], src.Content[i+1]
		replaced := false
		for j := 0; j+1 < len(dst.Content); j += 2 {
			if dst.Content[j].Value == k.Value {
				dst.Content[j+1] = v
				replaced = true
			}
		}
		if !replaced {
			dst.Content = append(dst.Content, k, v)
		}
	}
}

// docServer is what the test needs to know of one configured server.
type docServer struct {
	Name       string `yaml:"name"`
	Protocol   string `yaml:"protocol"`
	Username   string `yaml:"username"`
	Folder     string `yaml:"folder"`
	EWSURL     string `yaml:"ews_url"`
	AfterFetch string `yaml:"after_fetch"`
	Mailbox    string `yaml:"mailbox"`
	Auth       struct {
		Method string `yaml:"method"`
		OAuth  struct {
			Provider string `yaml:"provider"`
			Flow     string `yaml:"flow"`
		} `yaml:"oauth"`
	} `yaml:"auth"`
}

// docSetup is the environment of one block's commands.
type docSetup struct {
	dir      string
	env      map[string]string
	servers  []docServer
	fetchers []string          // servers expected to fetch the seeded message
	tokens   map[string][]byte // server -> token JSON for `oauth set-token`
	secrets  []string          // besides the env's: OAuth tokens
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// freeLoopbackPort returns a loopback port that nothing listens on (a
// closed port for a URL that must fail, a free one for a listener).
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// setupDocConfig writes data as mailworker.yaml into an empty directory and
// works out the environment (see the comment at the top).
func setupDocConfig(t *testing.T, b docBlock, data []byte, whole bool) *docSetup {
	t.Helper()
	s := &docSetup{dir: t.TempDir(), env: map[string]string{}}
	if err := os.WriteFile(filepath.Join(s.dir, "mailworker.yaml"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	var tree yaml.Node
	if err := yaml.Unmarshal(data, &tree); err != nil {
		t.Fatal(err)
	}
	top := tree.Content[0]
	var doc struct {
		DataDir  string `yaml:"data_dir"`
		Database struct {
			Driver string `yaml:"driver"`
		} `yaml:"database"`
		NATS struct {
			URL string `yaml:"url"`
		} `yaml:"nats"`
		Admin struct {
			Listen string `yaml:"listen"`
		} `yaml:"admin"`
		Servers []docServer `yaml:"servers"`
	}
	if err := tree.Decode(&doc); err != nil {
		t.Fatalf("%s: %v", b.name(), err)
	}
	s.servers = doc.Servers
	secretValue := map[string]string{} // *_env variable -> value
	fileValue := map[string]string{}   // env override of a *_file key -> content

	// Top level.
	if doc.NATS.URL == "" {
		s.env["MAILWORKER_NATS_LISTEN"] = "127.0.0.1:0"
	} else if whole {
		t.Fatalf("%s: a whole configuration with nats.url: extend the docs test to run it against a test NATS server", b.name())
	}
	if doc.Admin.Listen != "off" {
		s.env["MAILWORKER_ADMIN_LISTEN"] = fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	}
	if doc.Database.Driver == storage.Postgres {
		s.env["MAILWORKER_DATABASE_DSN"] = storagetest.Config(t, storage.Postgres).DSN
	}
	if filepath.IsAbs(doc.DataDir) {
		s.env["MAILWORKER_DATA_DIR"] = filepath.Join(s.dir, "data")
	}
	walkFileAndEnvKeys(top, nil, func(path []string, value string) {
		key := path[len(path)-1]
		name := config.EnvName(strings.Join(path, "."))
		switch {
		case strings.HasSuffix(key, "_env"):
			secretValue[value] = "docs-test-" + randomHex(8)
		case strings.HasSuffix(key, "_file"):
			p := value
			if !filepath.IsAbs(p) {
				p = filepath.Join(s.dir, p)
			}
			if _, err := os.Stat(p); err != nil {
				fileValue[name] = "docs-test-" + randomHex(8)
				if strings.Join(path, ".") == "secrets.key_file" {
					fileValue[name] = randomHex(32)
				}
			}
		}
	})

	// Servers.
	var dovecot *imaptest.Dovecot
	for _, srv := range doc.Servers {
		pre := config.EnvName("servers."+srv.Name) + "_"
		s.env[pre+"FETCH_INTERVAL"] = docsInterval.String()
		srvNode := serverNode(top, srv.Name)
		switch srv.Protocol {
		case string(config.ProtocolIMAPS), string(config.ProtocolIMAP):
			if !whole { // check-config only: it does not connect
				s.env[pre+"HOST"] = "127.0.0.1"
				s.env[pre+"PORT"] = strconv.Itoa(freeLoopbackPort(t))
				break
			}
			var dc *imaptest.Dovecot
			mailbox := false
			switch {
			case srv.Auth.Method == string(config.AuthPassword) || srv.Auth.Method == "":
				if dovecot == nil {
					dovecot = startDocsDovecot(t, doc.Servers)
				}
				dc, mailbox = dovecot, true
				pw := docsDovecotPassword(srv.Username)
				if v := valueAt(srvNode, "auth", "password_env"); v != "" {
					secretValue[v] = pw
				}
				if v := valueAt(srvNode, "auth", "password_file"); v != "" {
					fileValue[pre+"AUTH_PASSWORD_FILE"] = pw
				}
			case srv.Auth.Method == string(config.AuthOAuth2) && srv.Auth.OAuth.Flow != "client_credentials":
				// Delegated OAuth: oauthtest as the provider (token_url)
				// and a Dovecot that checks tokens with it; the token a
				// person would get by signing in is stored with `oauth
				// set-token`, as docs/oauth.md shows, before run.
				secret := ""
				if v := valueAt(srvNode, "auth", "oauth", "client_secret_env"); v != "" {
					secret = "docs-test-" + randomHex(8)
					secretValue[v] = secret
				}
				o := oauthtest.Start(t, oauthtest.Options{ClientID: valueAt(srvNode, "auth", "oauth", "client_id"), ClientSecret: secret, Username: srv.Username})
				s.env[pre+"AUTH_OAUTH_TOKEN_URL"] = o.TokenURL()
				access, refresh := o.IssueGrant(srv.Username)
				tok, err := json.Marshal(map[string]any{"access_token": access, "refresh_token": refresh, "expiry": time.Now().Add(time.Hour)})
				if err != nil {
					t.Fatal(err)
				}
				if s.tokens == nil {
					s.tokens = map[string][]byte{}
				}
				s.tokens[srv.Name] = tok
				s.secrets = append(s.secrets, access, refresh)
				dc, mailbox = imaptest.StartDovecot(t, imaptest.DovecotOptions{IntrospectionURL: o.IntrospectURL()}), true
			default:
				if dovecot == nil {
					dovecot = startDocsDovecot(t, doc.Servers)
				}
				dc = dovecot
			}
			port := dc.Port()
			if srv.Protocol == string(config.ProtocolIMAP) {
				port = dc.StartTLSPort()
			}
			s.env[pre+"HOST"] = "127.0.0.1"
			s.env[pre+"PORT"] = strconv.Itoa(port)
			s.env[pre+"TLS_CA_FILE"] = dc.CAFile()
			if mailbox {
				folder := srv.Folder
				if folder == "" {
					folder = "INBOX"
				}
				local, _, _ := strings.Cut(srv.Username, "@") // Dovecot's home is per %n
				if dest, ok := strings.CutPrefix(srv.AfterFetch, "move:"); ok {
					dc.SeedMaildir(local, dest, nil) // the folder the block moves mail to exists
				}
				dc.SeedMaildir(local, folder, [][]byte{docsMessage(b, srv)})
				s.fetchers = append(s.fetchers, srv.Name)
			}
		case string(config.ProtocolEWS):
			u, err := url.Parse(srv.EWSURL)
			if err != nil || u.Host == "" {
				t.Fatalf("%s: server %s: ews_url %q", b.name(), srv.Name, srv.EWSURL)
			}
			u.Host = fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
			auth := map[string]exchangetest.EWSAuth{string(config.AuthPassword): exchangetest.EWSBasic, string(config.AuthNTLM): exchangetest.EWSNTLM}
			if a, ok := auth[srv.Auth.Method]; ok && whole {
				// Password or NTLM: exchangetest's EWS fake over TLS, with
				// the block's user and the password its password_env names.
				pw := "docs-test-" + randomHex(8)
				if v := valueAt(srvNode, "auth", "password_env"); v != "" {
					secretValue[v] = pw
				}
				if v := valueAt(srvNode, "auth", "password_file"); v != "" {
					fileValue[pre+"AUTH_PASSWORD_FILE"] = pw
				}
				ews := exchangetest.NewEWS(t, exchangetest.EWSOptions{Auth: a, Username: srv.Username, Password: pw, TLS: true})
				fake, err := url.Parse(ews.URL)
				if err != nil {
					t.Fatal(err)
				}
				u.Host = fake.Host
				ca := filepath.Join(t.TempDir(), "ews-ca.pem")
				if err := os.WriteFile(ca, ews.CertPEM(), 0o600); err != nil {
					t.Fatal(err)
				}
				s.env[pre+"TLS_CA_FILE"] = ca
				folder := srv.Folder
				if folder == "" {
					folder = "inbox"
				}
				if ews.FolderID(folder) == "" {
					ews.AddFolder(folder)
				}
				if dest, ok := strings.CutPrefix(srv.AfterFetch, "move:"); ok && ews.FolderID(dest) == "" {
					ews.AddFolder(dest)
				}
				ews.Deliver(folder, docsMessage(b, srv), false)
				s.fetchers = append(s.fetchers, srv.Name)
			}
			s.env[pre+"EWS_URL"] = u.String()
		case string(config.ProtocolGraph):
			s.env[pre+"GRAPH_URL"] = fmt.Sprintf("https://127.0.0.1:%d/v1.0", freeLoopbackPort(t))
			if whole && srv.Auth.Method == string(config.AuthOAuth2) && srv.Auth.OAuth.Flow == "client_credentials" &&
				srv.Mailbox != "" && valueAt(srvNode, "auth", "oauth", "client_secret_env") != "" {
				// App-only: exchangetest's Graph fake over TLS, and a token
				// endpoint that gives the fake's token for the client
				// secret the block's client_secret_env names.
				secret := "docs-test-" + randomHex(8)
				secretValue[valueAt(srvNode, "auth", "oauth", "client_secret_env")] = secret
				token := "docs-graph-token-" + randomHex(8)
				g := exchangetest.NewGraph(t, exchangetest.GraphOptions{User: srv.Mailbox, Token: token, TLS: true})
				ca := filepath.Join(t.TempDir(), "graph-ca.pem")
				if err := os.WriteFile(ca, g.CertPEM(), 0o600); err != nil {
					t.Fatal(err)
				}
				s.env[pre+"GRAPH_URL"] = g.URL
				s.env[pre+"TLS_CA_FILE"] = ca
				s.env[pre+"AUTH_OAUTH_TOKEN_URL"] = clientCredentialsEndpoint(t, secret, token) + "/token"
				folder := srv.Folder
				if folder == "" {
					folder = "inbox"
				}
				if g.FolderID(folder) == "" {
					g.AddFolder(folder)
				}
				if dest, ok := strings.CutPrefix(srv.AfterFetch, "move:"); ok && g.FolderID(dest) == "" {
					g.AddFolder(dest)
				}
				g.Deliver(folder, docsMessage(b, srv), false)
				s.fetchers = append(s.fetchers, srv.Name)
			}
		}
		if srv.Auth.Method == string(config.AuthOAuth2) && s.env[pre+"AUTH_OAUTH_TOKEN_URL"] == "" {
			s.env[pre+"AUTH_OAUTH_TOKEN_URL"] = fmt.Sprintf("https://127.0.0.1:%d/token", freeLoopbackPort(t))
		}
	}
	for name, v := range secretValue {
		s.env[name] = v
	}
	for name, content := range fileValue {
		p := filepath.Join(t.TempDir(), "secret")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		s.env[name] = p
	}
	return s
}

// walkFileAndEnvKeys calls fn with the path and value of every scalar
// whose key ends in _env or _file; a server's path is servers.<name>.….
func walkFileAndEnvKeys(n *yaml.Node, path []string, fn func(path []string, value string)) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i].Value, n.Content[i+1]
			p := append(slices.Clone(path), k)
			if len(path) == 0 && k == "servers" && v.Kind == yaml.SequenceNode {
				for _, item := range v.Content {
					if name := valueAt(item, "name"); name != "" {
						walkFileAndEnvKeys(item, []string{"servers", name}, fn)
					}
				}
				continue
			}
			if v.Kind == yaml.ScalarNode && v.Value != "" && (strings.HasSuffix(k, "_env") || strings.HasSuffix(k, "_file")) {
				fn(p, v.Value)
				continue
			}
			walkFileAndEnvKeys(v, p, fn)
		}
	case yaml.AliasNode:
		walkFileAndEnvKeys(n.Alias, path, fn)
	}
}

func serverNode(top *yaml.Node, name string) *yaml.Node {
	if s := mapGet(top, "servers"); s != nil {
		for _, item := range s.Content {
			if valueAt(item, "name") == name {
				return item
			}
		}
	}
	return nil
}

// valueAt returns the scalar at keys below n, "" when absent.
func valueAt(n *yaml.Node, keys ...string) string {
	for _, k := range keys {
		if n = mapGet(n, k); n == nil {
			return ""
		}
	}
	if n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

// clientCredentialsEndpoint serves an OAuth token endpoint (http on
// loopback, which token_url accepts) that answers a client_credentials
// grant carrying secret with token.
func clientCredentialsEndpoint(t *testing.T, secret, token string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		sec := r.PostForm.Get("client_secret")
		if _, p, ok := r.BasicAuth(); ok {
			sec = p
		}
		w.Header().Set("Content-Type", "application/json")
		if r.PostForm.Get("grant_type") != "client_credentials" || sec != secret {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":"invalid_client"}`)
			return
		}
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3600}`, token)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// docsMessage is the message seeded into a block's mailbox.
func docsMessage(b docBlock, srv docServer) []byte {
	return []byte(fmt.Sprintf("From: customer@example.org\r\nTo: %s\r\nSubject: docs test %s\r\nMessage-ID: <docs-%s@example.org>\r\n\r\nHello from the docs test.\r\n",
		srv.Username, b.name(), randomHex(8)))
}

// docsDovecotPassword is the Dovecot password of a docs block's user.
func docsDovecotPassword(user string) string {
	return "docs-" + strings.NewReplacer("@", "-", ".", "-").Replace(user)
}

// startDocsDovecot runs a Dovecot with every password user of servers.
func startDocsDovecot(t *testing.T, servers []docServer) *imaptest.Dovecot {
	users := map[string]string{}
	for _, s := range servers {
		if s.Username != "" {
			users[s.Username] = docsDovecotPassword(s.Username)
		}
	}
	return imaptest.StartDovecot(t, imaptest.DovecotOptions{Users: users})
}

// syncBuffer is a bytes.Buffer safe for a process writing while the test
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// command runs the binary in the block's directory with its environment.
func (s *docSetup) command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = s.dir
	cmd.Env = cleanEnv(s.env)
	return cmd
}

// status runs `status --json` and decodes it.
func (s *docSetup) status(t *testing.T, bin string) ([]worker.ServerStatus, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := s.command(ctx, bin, "status", "--json")
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, errb.String(), fmt.Errorf("status --json: %v: %s", err, errb.String())
	}
	var sts []worker.ServerStatus
	if err := json.Unmarshal(out.Bytes(), &sts); err != nil {
		return nil, out.String(), fmt.Errorf("status --json printed %q: %v", out.String(), err)
	}
	return sts, out.String(), nil
}

// TestDocsYAMLBlocks runs every YAML block of the docs (see the comment at
// the top of this file).
func TestDocsYAMLBlocks(t *testing.T) {
	blocks := docYAMLBlocks(t)
	if len(blocks) < 7 {
		t.Fatalf("found %d yaml blocks in README.md and docs/*.md; the extraction is broken", len(blocks))
	}
	minimal := minimalConfig(t, blocks)
	bin := mailworkerBinary(t)
	// The blocks run at once: each mostly waits for fetch intervals, so
	// they are started from goroutines rather than with t.Parallel, whose
	// limit (-parallel, GOMAXPROCS: 2 here) would queue them.
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, b := range blocks {
		wg.Add(1)
		go func() {
			defer wg.Done() // after t.Run has reported the subtest's result
			t.Run(strings.NewReplacer("/", "_", ":", "_").Replace(b.name()), func(t *testing.T) { docBlockTest(t, b, minimal, bin) })
		}()
	}
}

// docBlockTest walks one block.
func docBlockTest(t *testing.T, b, minimal docBlock, bin string) {
	if b.skip != "" {
		t.Skipf("%s: marked docs-test: skip %s", b.name(), b.skip)
	}
	data, whole := docConfig(t, b, minimal)
	s := setupDocConfig(t, b, data, whole)
	t.Logf("%s: %s configuration, env %v", b.name(), map[bool]string{true: "whole", false: "fragment merged into the minimal"}[whole], s.env)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := s.command(ctx, bin, "check-config").CombinedOutput()
	if err != nil {
		t.Fatalf("%s: check-config: %v\n%s\nmailworker.yaml:\n%s", b.name(), err, out, data)
	}
	if !whole {
		return
	}
	// Delegated OAuth servers: store the token a sign-in would give, as
	// docs/oauth.md shows (`oauth set-token --server NAME < token.json`).
	for name, tok := range s.tokens {
		cmd := s.command(ctx, bin, "oauth", "set-token", "--server", name)
		cmd.Stdin = bytes.NewReader(tok)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: oauth set-token --server %s: %v\n%s", b.name(), name, err, out)
		}
	}
	// The README's next step: test-connection of each server that can be
	// reached here; it logs in and parses the oldest message, changing
	// nothing.
	for _, name := range s.fetchers {
		out, err := s.command(ctx, bin, "test-connection", "--server", name).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "nothing was changed") {
			t.Fatalf("%s: test-connection --server %s: %v\n%s", b.name(), name, err, out)
		}
	}
	runDocConfig(t, b, s, bin)
}

// runDocConfig runs a whole configuration: it must keep running for two
// fetch intervals, fetch what its IMAP password servers hold, answer
// status, and stop cleanly on SIGTERM.
func runDocConfig(t *testing.T, b docBlock, s *docSetup, bin string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var logs syncBuffer
	cmd := s.command(ctx, bin, "run")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
		}
	}()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s: %s\nrun output:\n%s", b.name(), fmt.Sprintf(format, args...), logs.String())
	}
	alive := func() {
		t.Helper()
		select {
		case err := <-exited:
			exited <- err
			fail("run exited after %s: %v", time.Since(started).Round(time.Second), err)
		default:
		}
	}

	// status and run both open (and, on a fresh data_dir, migrate) the
	// database: start asking once run has scheduled its servers.
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(logs.String(), `scheduled`) {
		alive()
		if time.Now().After(deadline) {
			fail("run did not schedule its servers within a minute")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Each server's first run, and for IMAP password servers a successful
	// fetch of the seeded message.
	first := map[string]time.Time{}
	deadline = time.Now().Add(time.Minute)
	var last string
	for {
		alive()
		sts, out, err := s.status(t, bin)
		last = out
		done := err == nil
		if err == nil {
			for _, srv := range s.servers {
				st := findStatus(sts, srv.Name)
				if st == nil || st.Run == nil || st.Run.LastRunAt == nil {
					done = false
					continue
				}
				if _, ok := first[srv.Name]; !ok {
					first[srv.Name] = *st.Run.LastRunAt
				}
				// Suppressed events are published too (disable_new_requests).
				if slices.Contains(s.fetchers, srv.Name) && (st.Run.Published+st.Run.Suppressed < 1 || st.Run.LastSuccessAt == nil) {
					done = false
				}
			}
		} else {
			last = err.Error()
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			fail("servers did not run (IMAP: fetch the seeded message) within a minute; last status:\n%s", last)
		}
		time.Sleep(500 * time.Millisecond)
	}

	// Still running two intervals after the start, with a later run of
	// every server recorded.
	deadline = started.Add(2*docsInterval + time.Minute)
	for {
		alive()
		sts, out, err := s.status(t, bin)
		if err != nil {
			fail("status while running: %v", err)
		}
		later := true
		for _, srv := range s.servers {
			st := findStatus(sts, srv.Name)
			if st == nil || st.Run == nil || st.Run.LastRunAt == nil || !st.Run.LastRunAt.After(first[srv.Name]) {
				later = false
			}
		}
		if later && time.Since(started) > 2*docsInterval+time.Second {
			break
		}
		if time.Now().After(deadline) {
			fail("no second run of every server recorded %s after the start; status:\n%s", time.Since(started).Round(time.Second), out)
		}
		time.Sleep(time.Second)
	}
	alive()

	// The human status output names every server.
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	out, err := s.command(sctx, bin, "status").CombinedOutput()
	if err != nil {
		fail("status: %v\n%s", err, out)
	}
	for _, srv := range s.servers {
		if !strings.Contains(string(out), srv.Name) {
			fail("status does not show server %s:\n%s", srv.Name, out)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			fail("run after SIGTERM: %v", err)
		}
	case <-time.After(worker.ShutdownGrace + 15*time.Second):
		fail("run did not stop within %s of SIGTERM", worker.ShutdownGrace+15*time.Second)
	}
	// Secrets given through the environment never reach the output.
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	sc.Buffer(nil, 1<<20)
	secrets := slices.Clone(s.secrets)
	for k, v := range s.env {
		if strings.HasPrefix(v, "docs-") && !strings.HasPrefix(k, "MAILWORKER_") {
			secrets = append(secrets, v)
		}
	}
	for sc.Scan() {
		for _, v := range secrets {
			if strings.Contains(sc.Text(), v) {
				t.Errorf("%s: a secret (%.12s…) appears in run's output: %s", b.name(), v, sc.Text())
			}
		}
	}
}

func findStatus(sts []worker.ServerStatus, name string) *worker.ServerStatus {
	for i := range sts {
		if sts[i].Server == name {
			return &sts[i]
		}
	}
	return nil
}

// TestDocsYAMLExtraction checks the extraction the docs walk relies on:
// yaml and yml fences, indented fences (inside list items), other
// languages ignored, and skip markers.
func TestDocsYAMLExtraction(t *testing.T) {
	md := "text\n\n```yaml\na: 1\n```\n\n```sh\nnot: yaml\n```\n\n1. item\n\n   ```yml\n   servers:\n     - name: x\n   ```\n\n" +
		"<!-- docs-test: skip shows an inline password, which is refused -->\n\n```yaml\npassword: x\n```\n" +
		"<!-- docs-test: skip -->\n```YAML\nb: 2\n```\n"
	bs, err := yamlBlocksOf("x.md", []byte(md))
	if err == nil || !strings.Contains(err.Error(), "x.md:24: docs-test: skip without a reason") {
		t.Errorf("err = %v", err)
	}
	if len(bs) != 4 {
		t.Fatalf("blocks = %+v", bs)
	}
	want := []docBlock{
		{file: "x.md", line: 3, text: "a: 1\n"},
		{file: "x.md", line: 13, text: "servers:\n  - name: x\n"},
		{file: "x.md", line: 20, text: "password: x\n", skip: "shows an inline password, which is refused"},
		{file: "x.md", line: 24, text: "b: 2\n"},
	}
	for i := range want {
		if bs[i] != want[i] {
			t.Errorf("block %d = %+v, want %+v", i, bs[i], want[i])
		}
	}
}

// TestReadmeReplayCommands runs the commands of README.md's "Replaying
// messages" block as written, through the binary, in a directory holding
// the README's minimal configuration and a copy of samples/mail (a clone
// with a configuration), with ~ a home whose Downloads/customer.eml starts
// with an mbox "From " line, as mail saved from an archive does. The
// embedded NATS listens on a free loopback port (MAILWORKER_NATS_LISTEN),
// never the system's 4222.
func TestReadmeReplayCommands(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Replaying messages\n")
	if !ok {
		t.Fatal(`README.md: no "## Replaying messages" section`)
	}
	_, block, ok := strings.Cut(section, "```sh\n")
	block, _, _ = strings.Cut(block, "```")
	if !ok || block == "" {
		t.Fatal(`README.md: no sh block in "Replaying messages"`)
	}
	blocks := docYAMLBlocks(t)
	minimal := minimalConfig(t, blocks)
	bin := mailworkerBinary(t)

	dir, home := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "mailworker.yaml"), []byte(minimal.text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(filepath.Join(dir, "samples", "mail"), os.DirFS(filepath.Join(repoRoot, "samples", "mail"))); err != nil {
		t.Fatal(err)
	}
	customer := "From customer@example.org Tue Nov 24 10:00:00 2026\nFrom: customer@example.org\nTo: support@example.com\n" +
		"Subject: saved from the archive\nMessage-ID: <saved@example.org>\n\nThe printer again.\n"
	if err := os.MkdirAll(filepath.Join(home, "Downloads"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, "Downloads", "customer.eml"), []byte(customer), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"HOME": home, "MAILWORKER_NATS_LISTEN": "127.0.0.1:0", "SUPPORT_IMAP_PASSWORD": "unused-by-replay"}
	run := func(args ...string) (string, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir, cmd.Env = dir, cleanEnv(env)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("mailworker %s: %v\n%s", strings.Join(args, " "), err, errb.String())
		}
		return out.String(), errb.String()
	}

	var ran []string
	for _, line := range strings.Split(block, "\n") {
		line, _, _ = strings.Cut(line, "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if f[0] != "mailworker" {
			t.Fatalf("README replay block: %q is not a mailworker command; extend this test", line)
		}
		for i := range f {
			if rest, ok := strings.CutPrefix(f[i], "~/"); ok {
				f[i] = filepath.Join(home, rest)
			}
		}
		out, errOut := run(f[1:]...)
		ran = append(ran, strings.Join(f[1:3], " "))
		switch {
		case slices.Contains(f, "--dry-run"):
			if n := strings.Count(out, "\n"); n != 10 || !strings.Contains(errOut, "replayed 10 messages") {
				t.Errorf("%s: printed %d events, want 10:\n%s", line, n, errOut)
			}
		case slices.Contains(f, "--server"):
			if !strings.Contains(errOut, "replayed 1 messages") {
				t.Errorf("%s:\n%s", line, errOut)
			}
		}
	}
	if len(ran) != 2 {
		t.Fatalf("ran %v; the README's replay block changed, extend this test", ran)
	}
	// What was published: one event for the saved mail, without its From line.
	out, _ := run("events", "--server", "support")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var ev struct {
		Server, Kind, Subject string
		Raw                   struct{ Size int64 }
	}
	if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &ev) != nil {
		t.Fatalf("events --server support printed:\n%s", out)
	}
	_, msg, _ := strings.Cut(customer, "\n")
	if ev.Server != "support" || ev.Kind != "new_request" || ev.Subject != "saved from the archive" ||
		ev.Raw.Size != int64(len(msg)+strings.Count(msg, "\n")) {
		t.Errorf("event %+v; want support's new_request of the message without its From line, CRLF (%d bytes)", ev, len(msg)+strings.Count(msg, "\n"))
	}
}
