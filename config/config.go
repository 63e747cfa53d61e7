// Package config defines mailworker's configuration file: its typed shape,
// defaults, environment overrides and validation.
//
// The file is YAML. Every error found while loading names the file, the line,
// the key and the reason, and all errors are reported at once (see Load).
// Secrets are never written inline: a server refers to them through
// *_env or *_file keys, resolved when they are needed (see Server.Password).
package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Protocol is the access protocol of an incoming mail server.
type Protocol string

const (
	ProtocolIMAPS Protocol = "imaps" // IMAP over implicit TLS (port 993)
	ProtocolIMAP  Protocol = "imap"  // IMAP with mandatory STARTTLS (port 143)
	ProtocolEWS   Protocol = "ews"   // Exchange Web Services (on-premises Exchange)
	ProtocolGraph Protocol = "graph" // Microsoft Graph (Exchange Online)
)

// Config is the whole configuration file.
type Config struct {
	// Path is the file the configuration was loaded from ("" when built in code).
	Path string `yaml:"-"`

	// DataDir holds the SQLite database, the embedded NATS store, the raw copies
	// of unparseable mail and the generated secret key file. Default "./data".
	DataDir string `yaml:"data_dir"`

	Database Database `yaml:"database"`
	NATS     NATS     `yaml:"nats"`
	Parser   Parser   `yaml:"parser"`
	Admin    Admin    `yaml:"admin"`
	Secrets  Secrets  `yaml:"secrets"`
	Log      Log      `yaml:"log"`

	Servers []Server `yaml:"servers"`

	// src records where each key was set (by Load), for error positions.
	src map[string]source
}

// Database selects where mailworker keeps checkpoints, the ledger and tokens.
type Database struct {
	// Driver is "sqlite" (default; a file in DataDir, pure-Go driver) or "postgres".
	Driver string `yaml:"driver"`
	// DSN is the data source name. For sqlite the default is
	// DataDir/mailworker.db; for postgres it is required, e.g.
	// "postgres://user@127.0.0.1:5432/mailworker?sslmode=disable".
	DSN string `yaml:"dsn"`
}

// NATS selects the JetStream server events are published to.
type NATS struct {
	// URL of the NATS server or cluster (comma-separated). Empty starts an
	// embedded in-process server with JetStream, storing in DataDir/nats.
	URL string `yaml:"url"`
	// Stream is the JetStream stream name. Default "MAIL".
	Stream string `yaml:"stream"`
	// SubjectPrefix is the first subject token. Default "mail"; events go to
	// <prefix>.<server>.<request|reply|auto|suppressed|failed>.
	SubjectPrefix string `yaml:"subject_prefix"`
	// Listen is where the embedded server of `mailworker run` (URL empty)
	// accepts clients from other processes, such as the helpdesk and
	// `mailworker events`. Default "127.0.0.1:4222"; port 0 picks a free
	// port at every start. The URL in use is written to DataDir/nats.url.
	// A non-loopback address needs TokenEnv or TokenFile. Ignored when URL
	// is set.
	Listen string `yaml:"listen"`
	// TokenEnv names the environment variable holding the token every
	// client of the embedded server must present. With TokenFile, at most
	// one may be set; with neither, the embedded server only accepts
	// clients without authentication, which Validate allows on loopback
	// only. Ignored when URL is set.
	TokenEnv string `yaml:"token_env"`
	// TokenFile is a file holding that token; when it does not exist,
	// `mailworker run` creates it (mode 0600) with a random token.
	TokenFile string `yaml:"token_file"`
	// CredentialsFile is a NATS .creds file (JWT + nkey), optional.
	CredentialsFile string `yaml:"credentials_file"`
	// TLS for the NATS connection, optional.
	TLS TLS `yaml:"tls"`
	// DuplicateWindow is JetStream's dedupe window. Default 10m.
	DuplicateWindow Duration `yaml:"duplicate_window"`
	// Replicas of the stream in a cluster. Default 1.
	Replicas int `yaml:"replicas"`
	// AttachmentsBucket, when set, stores every attachment in this JetStream
	// Object Store bucket; the event then carries its key in attachments[].object.
	AttachmentsBucket string `yaml:"attachments_bucket"`
}

// TLS configures a TLS client connection. The zero value verifies the peer
// against the system roots.
type TLS struct {
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Parser holds the MIME parser limits and ticket reference patterns.
// Zero values mean the documented defaults.
type Parser struct {
	MaxMessageBytes int64 `yaml:"max_message_bytes"` // default 150 MB; larger mail is published as failed (too_large), raw kept
	MaxParts        int   `yaml:"max_parts"`         // default 1000
	MaxDepth        int   `yaml:"max_depth"`         // default 20
	MaxHeaderBytes  int   `yaml:"max_header_bytes"`  // default 1 MiB
	MaxBodyBytes    int   `yaml:"max_body_bytes"`    // text and html each; default 1 MB
	// TicketPatterns are regular expressions with one capturing group (the
	// request number), tried in order on the subject. Empty = the defaults
	// ([Request ID :##123##], ##123##, [Ticket#123], [#123]).
	TicketPatterns []string `yaml:"ticket_patterns"`
	// LoopHeader is the header name our own outgoing mail carries; mail that
	// has it is marked loop. Default "X-Mailworker-Loop".
	LoopHeader string `yaml:"loop_header"`
}

// Admin is the admin HTTP listener of `mailworker run` (OAuth redirects,
// status). It binds to loopback by default; bound to any other address it
// requires a token.
type Admin struct {
	// Listen address, default "127.0.0.1:8025"; "off" disables the listener.
	Listen string `yaml:"listen"`
	// TokenEnv names the environment variable that holds the admin bearer token.
	TokenEnv string `yaml:"token_env"`
	// TokenFile is a file holding the admin bearer token.
	TokenFile string `yaml:"token_file"`
}

// Secrets configures encryption at rest of stored tokens.
type Secrets struct {
	// KeyFile holds a 32-byte key (hex or base64). Default DataDir/secret.key,
	// created with mode 0600 when missing. MAILWORKER_SECRET_KEY overrides it.
	KeyFile string `yaml:"key_file"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug | info (default) | warn | error
	Format string `yaml:"format"` // text | json | "" (text on a terminal, json otherwise)
}

// Server is one incoming mail server (one mailbox folder to fetch from).
type Server struct {
	// Name is unique, [a-z0-9_-]+; it appears in subjects, logs and the CLI.
	Name     string   `yaml:"name"`
	Protocol Protocol `yaml:"protocol"`

	// Host and Port for imaps/imap. Port defaults to 993 (imaps) or 143 (imap).
	Host string `yaml:"host"`
	Port int    `yaml:"port"`
	TLS  TLS    `yaml:"tls"`

	// EWSURL is the EWS connect URL, e.g. https://mail.example.com/EWS/Exchange.asmx.
	EWSURL string `yaml:"ews_url"`
	// EWSVersion is the RequestServerVersion sent, default "Exchange2013_SP1".
	EWSVersion string `yaml:"ews_version"`
	// Impersonate, for EWS with app-only OAuth, is the SMTP address of the
	// mailbox to act as (ExchangeImpersonation + X-AnchorMailbox).
	Impersonate string `yaml:"impersonate"`

	// Mailbox is the Graph mailbox (UPN or id).
	Mailbox string `yaml:"mailbox"`
	// GraphURL overrides https://graph.microsoft.com/v1.0 (tests, national clouds).
	GraphURL string `yaml:"graph_url"`

	// Username to log in with (IMAP, EWS).
	Username string `yaml:"username"`
	// Addresses are the mailbox's own addresses (loop detection, event.mailbox).
	Addresses []string `yaml:"addresses"`
	// Folder to fetch from. Default "INBOX" (IMAP), "inbox" (EWS, Graph).
	Folder string `yaml:"folder"`

	Auth Auth `yaml:"auth"`

	// FetchInterval between fetches; "90s", "5m", or a bare integer of minutes.
	// At least 10s in a config file. Default 5m.
	FetchInterval Duration `yaml:"fetch_interval"`
	// StallTimeout is the no-progress limit of every network read and
	// write for this server: when no byte moved for this long, the step
	// fails, the connection is closed and the run ends with an error
	// naming the step (the next run connects afresh). A slow transfer that
	// keeps moving is never cut by it. Default 60s; 5s to 30m in a config
	// file.
	StallTimeout Duration `yaml:"stall_timeout"`
	// MaxPerFetch caps the messages processed in one fetch. Default 500.
	MaxPerFetch int `yaml:"max_per_fetch"`
	// AfterFetch is what happens to a message at the source once its event is
	// acknowledged: mark_seen (default), move:<folder>, delete or none.
	AfterFetch AfterFetch `yaml:"after_fetch"`

	// EmailDebug logs this server's protocol transcript and per-message
	// decisions at debug level, secrets redacted.
	EmailDebug bool `yaml:"email_debug"`
	// DisableNewRequests: mail that would open a new request is published on
	// the suppressed subject instead (replies and auto mail flow as usual).
	DisableNewRequests bool `yaml:"disable_new_requests"`
	// NewRequestAllow lists senders (address or *@domain) still allowed to
	// open new requests when DisableNewRequests is set.
	NewRequestAllow []string `yaml:"new_request_allow"`

	// PlusAddressTicketRef reads the plus-address tag of the address the
	// mail was for (support+4711@example.com gives 4711) as the ticket
	// reference when the subject carries none.
	PlusAddressTicketRef bool `yaml:"plus_address_ticket_ref"`
	// TrustedAuthservIDs are the authserv-ids (RFC 8601) of the receiving
	// servers whose Authentication-Results fields go into event.auth;
	// fields of other ids are ignored. Empty trusts none.
	TrustedAuthservIDs []string `yaml:"trusted_authserv_ids"`
}

// AuthMethod is how mailworker authenticates to a server.
type AuthMethod string

const (
	AuthPassword AuthMethod = "password" // IMAP LOGIN/PLAIN, EWS Basic
	AuthNTLM     AuthMethod = "ntlm"     // EWS on-premises
	AuthOAuth2   AuthMethod = "oauth2"   // XOAUTH2/OAUTHBEARER, bearer token
)

// Auth configures a server's authentication. Secrets are referenced, never inline.
type Auth struct {
	Method       AuthMethod `yaml:"method"`
	PasswordEnv  string     `yaml:"password_env"`
	PasswordFile string     `yaml:"password_file"`
	OAuth        OAuth      `yaml:"oauth"`
}

// OAuth flows.
const (
	FlowAuthorizationCode = "authorization_code"
	FlowPKCE              = "pkce"
	FlowClientCredentials = "client_credentials"
	FlowManual            = "manual"
)

// OAuth providers.
const (
	ProviderGoogle    = "google"
	ProviderMicrosoft = "microsoft"
	ProviderCustom    = "custom"
)

// OAuth configures OAuth 2.0 for a server. Providers fill documented defaults.
type OAuth struct {
	Provider         string   `yaml:"provider"` // google | microsoft | custom
	Tenant           string   `yaml:"tenant"`   // microsoft; default "organizations"
	Flow             string   `yaml:"flow"`     // authorization_code | pkce | client_credentials | manual
	ClientID         string   `yaml:"client_id"`
	ClientSecretEnv  string   `yaml:"client_secret_env"`
	ClientSecretFile string   `yaml:"client_secret_file"`
	AuthURL          string   `yaml:"auth_url"`
	TokenURL         string   `yaml:"token_url"`
	RevokeURL        string   `yaml:"revoke_url"`
	Scopes           []string `yaml:"scopes"`
	RedirectURL      string   `yaml:"redirect_url"`
	// SASL mechanism for IMAP: "" (choose from capabilities), xoauth2 or oauthbearer.
	SASL string `yaml:"sasl"`
}

// Duration is a time.Duration that reads "90s", "5m", "1h30m", or a bare
// integer meaning minutes (as helpdesk admin screens set fetch intervals).
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// ParseDuration parses the forms accepted by Duration.
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("negative duration %q", s)
		}
		return Duration(time.Duration(n) * time.Minute), nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (use e.g. 90s, 5m, or a number of minutes)", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("negative duration %q", s)
	}
	return Duration(v), nil
}

// AfterFetch actions.
const (
	ActionMarkSeen = "mark_seen"
	ActionMove     = "move"
	ActionDelete   = "delete"
	ActionNone     = "none"
)

// AfterFetch is the post-fetch action; written "mark_seen", "move:<folder>",
// "delete" or "none".
type AfterFetch struct {
	Action string // one of the Action* constants; "" means mark_seen
	Folder string // destination, for move
}

// ParseAfterFetch parses the textual form of AfterFetch.
func ParseAfterFetch(s string) (AfterFetch, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "" || s == ActionMarkSeen:
		return AfterFetch{Action: ActionMarkSeen}, nil
	case s == ActionDelete || s == ActionNone:
		return AfterFetch{Action: s}, nil
	case strings.HasPrefix(s, ActionMove+":"):
		f := strings.TrimSpace(strings.TrimPrefix(s, ActionMove+":"))
		if f == "" {
			return AfterFetch{}, fmt.Errorf("move needs a folder, e.g. move:Processed")
		}
		return AfterFetch{Action: ActionMove, Folder: f}, nil
	}
	return AfterFetch{}, fmt.Errorf("unknown after_fetch %q (want mark_seen, move:<folder>, delete or none)", s)
}

func (a AfterFetch) String() string {
	if a.Action == ActionMove {
		return ActionMove + ":" + a.Folder
	}
	if a.Action == "" {
		return ActionMarkSeen
	}
	return a.Action
}
