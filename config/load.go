package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts the name of every environment variable that overrides a
// configuration key (see Load).
const EnvPrefix = "MAILWORKER_"

// LoadOptions tune Load.
type LoadOptions struct {
	// Getenv looks up environment overrides. Nil means os.Getenv; tests pass
	// their own so they never touch the process environment.
	Getenv func(string) string
}

// Load reads the YAML file at path with overrides from the process
// environment; see LoadWith.
func Load(path string) (*Config, error) {
	return LoadWith(path, LoadOptions{})
}

// LoadWith reads the YAML file at path, applies environment overrides, fills
// defaults (SetDefaults) and validates the result (Validate).
//
// Unknown keys, values of the wrong type and secrets written inline are
// errors. All problems are collected and returned together as Errors, each
// naming the file, line and key; the returned Config is then nil. A file that
// cannot be read gives a plain error wrapping the os error.
//
// Environment overrides: every key can be overridden by MAILWORKER_ followed
// by its dotted path upper-cased with "." replaced by "_", e.g.
// MAILWORKER_NATS_URL, MAILWORKER_DATABASE_DSN, MAILWORKER_NATS_TLS_CA_FILE.
// A server's keys use its name (upper-cased, "-" replaced by "_"):
// MAILWORKER_SERVERS_SUPPORT_FETCH_INTERVAL,
// MAILWORKER_SERVERS_HELP_DESK_AUTH_OAUTH_CLIENT_ID. Only servers present in
// the file can be overridden, and not their name. Lists are comma-separated.
// An empty variable does not override. Values from the environment are
// checked like values from the file; their errors name the variable.
func LoadWith(path string, opts LoadOptions) (*Config, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: read %s: %w", path, err)
	}
	c, errs := parse(path, data, getenv)
	if c == nil {
		return nil, errs
	}
	// Validate (which judges zero values as their defaults, and sees
	// explicit zeros) even when decoding failed, so that every problem is
	// reported at once; a key that failed to decode is not judged again.
	var verrs Errors
	if err := c.Validate(); err != nil {
		verrs = err.(Errors)
	}
	c.SetDefaults()
	for _, e := range verrs {
		if !coveredBy(e.Key, errs) {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		sortErrors(errs)
		return nil, errs
	}
	return c, nil
}

// coveredBy reports whether a decoding error was reported for key or a key
// above or below it.
func coveredBy(key string, errs Errors) bool {
	for _, e := range errs {
		if e.Key == key || strings.HasPrefix(key, e.Key+".") || strings.HasPrefix(e.Key, key+".") {
			return true
		}
	}
	return false
}

// Parse decodes YAML data as if read from file (used in error messages),
// with environment overrides from getenv (nil: none), without applying
// defaults or validating. Decoding errors are returned as Errors.
func Parse(file string, data []byte, getenv func(string) string) (*Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	c, errs := parse(file, data, getenv)
	if len(errs) > 0 {
		return nil, errs
	}
	return c, nil
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parse decodes data. On a YAML syntax error it returns a nil Config;
// otherwise the Config holds everything that decoded, and errs the rest.
func parse(file string, data []byte, getenv func(string) string) (*Config, Errors) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, syntaxErrors(file, err)
	}
	d := &decoder{file: file, src: map[string]source{}, env: map[*yaml.Node]string{}}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	if root.Kind == 0 || (root.Kind == yaml.ScalarNode && root.Tag == "!!null") {
		root = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: 1}
	}
	if root.Kind == yaml.MappingNode {
		d.applyEnv(root, getenv)
	}
	c := &Config{Path: file}
	d.decodeStruct(root, reflect.ValueOf(c).Elem(), "")
	c.src = d.src
	for _, e := range d.errs {
		e.Key = displayKey(c.Servers, e.Key)
	}
	return c, d.errs
}

// syntaxErrors turns yaml.v3's errors ("yaml: line 3: ...") into Errors.
func syntaxErrors(file string, err error) Errors {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	var es Errors
	for _, m := range msgs {
		e := &Error{File: file, Reason: strings.TrimPrefix(m, "yaml: ")}
		if sm := yamlLineRE.FindStringSubmatch(m); sm != nil {
			e.Line, _ = strconv.Atoi(sm[1])
			e.Reason = sm[2]
		}
		es = append(es, e)
	}
	return es
}

// source is where a key was set.
type source struct {
	line int
	env  string
}

// maxDecodeSteps bounds the work of decoding one file, so that nested
// aliases and merge keys ("billion laughs") cannot make it explode.
const maxDecodeSteps = 100000

type decoder struct {
	steps int
	file  string
	errs  Errors
	src   map[string]source     // canonical path ("servers[1].auth.method") → where
	env   map[*yaml.Node]string // nodes created from environment variables
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	e := &Error{File: d.file, Key: path, Reason: fmt.Sprintf(format, args...)}
	if name, ok := d.env[n]; ok {
		e.Env = name
	} else if n != nil {
		e.Line = n.Line
	}
	d.errs = append(d.errs, e)
}

var (
	durationType   = reflect.TypeFor[Duration]()
	afterFetchType = reflect.TypeFor[AfterFetch]()
)

// isLeaf reports whether values of t are written as one scalar or list.
func isLeaf(t reflect.Type) bool {
	if t == durationType || t == afterFetchType {
		return true
	}
	return t.Kind() != reflect.Struct && !(t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct)
}

// yamlName returns the key of field f, or "" when it has none.
func yamlName(f reflect.StructField) string {
	tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if tag == "-" || !f.IsExported() {
		return ""
	}
	return tag
}

func fieldByKey(t reflect.Type, key string) (int, bool) {
	for i := range t.NumField() {
		if n := yamlName(t.Field(i)); n != "" && n == key {
			return i, true
		}
	}
	return 0, false
}

func keysOf(t reflect.Type) []string {
	var ks []string
	for i := range t.NumField() {
		if n := yamlName(t.Field(i)); n != "" {
			ks = append(ks, n)
		}
	}
	return ks
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	n = resolveAlias(n)
	if d.steps++; d.steps == maxDecodeSteps {
		d.errorf(n, path, "too many values (more than %d, counting each use of an alias)", maxDecodeSteps)
	}
	if d.steps >= maxDecodeSteps {
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "want a mapping of keys (%s)", strings.Join(keysOf(v.Type()), ", "))
		return
	}
	// Merge keys (<<: *anchor) first, so that keys written here win.
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Tag == "!!merge" {
			val := resolveAlias(n.Content[i+1])
			if val.Kind == yaml.SequenceNode {
				for _, m := range val.Content {
					d.decodeStruct(m, v, path)
				}
			} else {
				d.decodeStruct(val, v, path)
			}
		}
	}
	seen := map[string]int{}
	t := v.Type()
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Tag == "!!merge" || (path == "" && strings.HasPrefix(k.Value, "x-")) {
			continue // x- keys hold YAML anchors for reuse
		}
		key := k.Value
		p := join(path, key)
		if line, dup := seen[key]; dup {
			d.errorf(k, p, "key written twice (first at line %d)", line)
			continue
		}
		seen[key] = k.Line
		fi, ok := fieldByKey(t, key)
		if !ok {
			if hint, isSecret := inlineSecretHint(path, key); isSecret {
				d.errorf(k, p, "secrets are not allowed inline; %s", hint)
			} else {
				d.errorf(k, p, "unknown key%s", suggest(key, keysOf(t)))
			}
			continue
		}
		if name, fromEnv := d.env[val]; fromEnv {
			d.src[p] = source{env: name}
		} else {
			d.src[p] = source{line: k.Line}
		}
		d.decodeValue(val, v.Field(fi), p)
	}
}

func (d *decoder) decodeValue(n *yaml.Node, v reflect.Value, path string) {
	n = resolveAlias(n)
	if d.steps++; d.steps == maxDecodeSteps {
		d.errorf(n, path, "too many values (more than %d, counting each use of an alias)", maxDecodeSteps)
	}
	if d.steps >= maxDecodeSteps {
		return
	}
	t := v.Type()
	switch {
	case t == durationType:
		s, ok := d.scalar(n, path, "a duration such as 90s, 5m or a number of minutes")
		if !ok || s == "" {
			return
		}
		dur, err := ParseDuration(s)
		if err != nil {
			d.errorf(n, path, "%v", err)
			return
		}
		v.Set(reflect.ValueOf(dur))
	case t == afterFetchType:
		s, ok := d.scalar(n, path, "mark_seen, move:<folder>, delete or none")
		if !ok || s == "" {
			return
		}
		af, err := ParseAfterFetch(s)
		if err != nil {
			d.errorf(n, path, "%v", err)
			return
		}
		v.Set(reflect.ValueOf(af))
	case t.Kind() == reflect.String:
		s, ok := d.scalar(n, path, "a string")
		if ok {
			v.SetString(s)
		}
	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		s, ok := d.scalar(n, path, "an integer")
		if !ok || s == "" {
			return
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, 64)
		if err != nil || v.OverflowInt(i) {
			d.errorf(n, path, "want an integer, got %q", s)
			return
		}
		v.SetInt(i)
	case t.Kind() == reflect.Bool:
		s, ok := d.scalar(n, path, "true or false")
		if !ok || s == "" {
			return
		}
		switch strings.ToLower(s) {
		case "true", "yes", "on":
			v.SetBool(true)
		case "false", "no", "off":
			v.SetBool(false)
		default:
			d.errorf(n, path, "want true or false, got %q", s)
		}
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.errorf(n, path, "want a list, e.g. [a, b]")
			return
		}
		out := reflect.MakeSlice(t, 0, len(n.Content))
		for i, item := range n.Content {
			s, ok := d.scalar(resolveAlias(item), fmt.Sprintf("%s[%d]", path, i), "a string")
			if ok {
				out = reflect.Append(out, reflect.ValueOf(s).Convert(t.Elem()))
			}
		}
		v.Set(out)
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.errorf(n, path, "want a list of mappings (\"- name: ...\")")
			return
		}
		out := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			d.src[p] = source{line: item.Line}
			d.decodeStruct(item, out.Index(i), p)
		}
		v.Set(out)
	case t.Kind() == reflect.Struct:
		d.decodeStruct(n, v, path)
	default:
		panic("config: no decoder for " + t.String())
	}
}

// scalar returns the text of a scalar node ("" for null).
func (d *decoder) scalar(n *yaml.Node, path, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "want %s, not a %s", want, kindName(n.Kind))
		return "", false
	}
	if n.Tag == "!!null" {
		return "", true
	}
	return n.Value, true
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	}
	return "value"
}

// inlineSecretHint reports whether key, found under path, looks like a
// secret written inline, and which keys to use instead. It never looks at
// the value.
func inlineSecretHint(path, key string) (string, bool) {
	inServer := strings.HasPrefix(path, "servers[")
	switch key {
	case "password", "pass", "passwd":
		if strings.HasSuffix(path, ".auth") {
			return "use password_env or password_file", true
		}
		if inServer {
			return "use auth.password_env or auth.password_file", true
		}
		return "use a *_env or *_file key", true
	case "client_secret":
		if strings.HasSuffix(path, ".oauth") {
			return "use client_secret_env or client_secret_file", true
		}
		return "use auth.oauth.client_secret_env or auth.oauth.client_secret_file", true
	case "access_token", "refresh_token":
		return "mailworker obtains and stores OAuth tokens itself (mailworker oauth authorize)", true
	case "token":
		if path == "admin" {
			return "use token_env or token_file", true
		}
		return "use a *_env or *_file key", true
	case "secret", "api_key", "apikey":
		return "use a *_env or *_file key", true
	}
	return "", false
}

// suggest returns " (did you mean X?)" for the known key closest to key.
func suggest(key string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if dist := editDistance(key, k); dist < bestD {
			best, bestD = k, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// EnvName returns the environment variable that overrides the key at the
// dotted path (e.g. "nats.url" → MAILWORKER_NATS_URL,
// "servers.help-desk.fetch_interval" →
// MAILWORKER_SERVERS_HELP_DESK_FETCH_INTERVAL).
func EnvName(path string) string {
	r := strings.NewReplacer(".", "_", "-", "_")
	return EnvPrefix + strings.ToUpper(r.Replace(path))
}

// envKey is one overridable key.
type envKey struct {
	path []string // yaml keys from the mapping the walk started at
	typ  reflect.Type
}

// envKeys lists the leaf keys of t, depth first, skipping servers (handled
// per server name) and a server's name.
func envKeys(t reflect.Type, prefix []string, out []envKey) []envKey {
	for i := range t.NumField() {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" || (t == reflect.TypeFor[Server]() && name == "name") {
			continue
		}
		p := append(slices.Clone(prefix), name)
		switch {
		case isLeaf(f.Type):
			out = append(out, envKey{path: p, typ: f.Type})
		case f.Type.Kind() == reflect.Struct:
			out = envKeys(f.Type, p, out)
		}
	}
	return out
}

// applyEnv writes environment overrides into the YAML tree, so they are
// decoded and checked exactly like the file's values.
func (d *decoder) applyEnv(root *yaml.Node, getenv func(string) string) {
	for _, k := range envKeys(reflect.TypeFor[Config](), nil, nil) {
		d.setFromEnv(root, k, EnvName(strings.Join(k.path, ".")), getenv)
	}
	servers := mapValue(root, "servers")
	if servers = resolveAlias(servers); servers == nil || servers.Kind != yaml.SequenceNode {
		return
	}
	keys := envKeys(reflect.TypeFor[Server](), nil, nil)
	for _, item := range servers.Content {
		item = resolveAlias(item)
		if item.Kind != yaml.MappingNode {
			continue
		}
		nameNode := resolveAlias(mapValue(item, "name"))
		if nameNode == nil || nameNode.Kind != yaml.ScalarNode || nameNode.Value == "" {
			continue
		}
		for _, k := range keys {
			name := EnvName("servers." + nameNode.Value + "." + strings.Join(k.path, "."))
			d.setFromEnv(item, k, name, getenv)
		}
	}
}

func (d *decoder) setFromEnv(m *yaml.Node, k envKey, name string, getenv func(string) string) {
	val := getenv(name)
	if val == "" {
		return
	}
	var n *yaml.Node
	if k.typ.Kind() == reflect.Slice {
		n = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for _, s := range strings.Split(val, ",") {
			if s = strings.TrimSpace(s); s != "" {
				item := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
				d.env[item] = name
				n.Content = append(n.Content, item)
			}
		}
	} else {
		n = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: val}
	}
	d.env[n] = name
	// Walk down, creating mappings that the file does not have.
	for i, key := range k.path {
		last := i == len(k.path)-1
		child := -1
		for j := 0; j+1 < len(m.Content); j += 2 {
			if m.Content[j].Value == key && m.Content[j].Tag != "!!merge" {
				child = j + 1
			}
		}
		if last {
			if child >= 0 {
				m.Content[child] = n
			} else {
				kn := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}
				d.env[kn] = name
				m.Content = append(m.Content, kn, n)
			}
			return
		}
		if child >= 0 {
			next := resolveAlias(m.Content[child])
			if next != m.Content[child] {
				// An alias may be shared by several servers: override a copy.
				cp := *next
				cp.Content = slices.Clone(next.Content)
				next = &cp
				m.Content[child] = next
			}
			if next.Kind == yaml.ScalarNode && next.Tag == "!!null" {
				next = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: next.Line}
				m.Content[child] = next
			} else if next.Kind != yaml.MappingNode {
				return // the file's type error is reported by the decoder
			}
			m = next
			continue
		}
		kn := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}
		next := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		d.env[kn] = name
		d.env[next] = name
		m.Content = append(m.Content, kn, next)
		m = next
	}
}

// mapValue returns the value of key in mapping m, or nil.
func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for j := 0; j+1 < len(m.Content); j += 2 {
		if m.Content[j].Value == key {
			return m.Content[j+1]
		}
	}
	return nil
}
