package config

import "time"

// Defaults. Zero values in a Config mean these (SetDefaults fills them in).
const (
	DefaultDataDir         = "./data" // relative to the working directory
	DefaultDatabaseDriver  = "sqlite"
	DefaultStream          = "MAIL"
	DefaultSubjectPrefix   = "mail"
	DefaultDuplicateWindow = Duration(10 * time.Minute)
	DefaultReplicas        = 1
	DefaultFetchInterval   = Duration(5 * time.Minute)
	DefaultStallTimeout    = Duration(60 * time.Second)
	DefaultMaxPerFetch     = 500
	DefaultAdminListen     = "127.0.0.1:8025"
	DefaultNATSListen      = "127.0.0.1:4222" // the embedded server's
	DefaultLogLevel        = "info"
	DefaultEWSVersion      = "Exchange2013_SP1"
	DefaultTenant          = "organizations" // microsoft OAuth tenant

	DefaultMaxMessageBytes = 150 << 20 // 150 MB, what Exchange Online accepts
	DefaultMaxParts        = 1000
	DefaultMaxDepth        = 20
	DefaultMaxHeaderBytes  = 1 << 20 // 1 MiB
	DefaultMaxBodyBytes    = 1 << 20 // 1 MB, text and html each
	DefaultLoopHeader      = "X-Mailworker-Loop"

	// MinFetchInterval is the shortest fetch_interval Validate accepts.
	// Tests that need faster schedules build their Config in Go and do not
	// call Validate.
	MinFetchInterval = 10 * time.Second

	// MinStallTimeout and MaxStallTimeout bound stall_timeout in a config
	// file. Tests that need a shorter one build their Config in Go.
	MinStallTimeout = 5 * time.Second
	MaxStallTimeout = 30 * time.Minute
)

// SetDefaults fills every zero field that has a documented default. It is
// idempotent. Left empty on purpose: database.dsn (storage derives the
// SQLite file from data_dir), nats.url (empty starts the embedded server),
// secrets.key_file (DataDir/secret.key, resolved by package secret),
// parser.ticket_patterns (the parser's defaults) and log.format.
func (c *Config) SetDefaults() {
	def(&c.DataDir, DefaultDataDir)
	def(&c.Database.Driver, DefaultDatabaseDriver)
	def(&c.NATS.Stream, DefaultStream)
	def(&c.NATS.SubjectPrefix, DefaultSubjectPrefix)
	def(&c.NATS.Listen, DefaultNATSListen)
	if c.NATS.DuplicateWindow == 0 {
		c.NATS.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.NATS.Replicas == 0 {
		c.NATS.Replicas = DefaultReplicas
	}
	p := &c.Parser
	if p.MaxMessageBytes == 0 {
		p.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if p.MaxParts == 0 {
		p.MaxParts = DefaultMaxParts
	}
	if p.MaxDepth == 0 {
		p.MaxDepth = DefaultMaxDepth
	}
	if p.MaxHeaderBytes == 0 {
		p.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if p.MaxBodyBytes == 0 {
		p.MaxBodyBytes = DefaultMaxBodyBytes
	}
	def(&p.LoopHeader, DefaultLoopHeader)
	def(&c.Admin.Listen, DefaultAdminListen)
	def(&c.Log.Level, DefaultLogLevel)
	for i := range c.Servers {
		c.Servers[i].SetDefaults()
	}
}

// SetDefaults fills the server's zero fields that have a default: port
// (993 imaps, 143 imap), folder (INBOX for IMAP, inbox for EWS and Graph),
// ews_version, fetch_interval (5m), stall_timeout (60s), max_per_fetch (500), after_fetch
// (mark_seen) and, for provider microsoft, the OAuth tenant.
func (s *Server) SetDefaults() {
	switch s.Protocol {
	case ProtocolIMAPS:
		defInt(&s.Port, 993)
		def(&s.Folder, "INBOX")
	case ProtocolIMAP:
		defInt(&s.Port, 143)
		def(&s.Folder, "INBOX")
	case ProtocolEWS:
		def(&s.Folder, "inbox")
		def(&s.EWSVersion, DefaultEWSVersion)
	case ProtocolGraph:
		def(&s.Folder, "inbox")
	}
	if s.FetchInterval == 0 {
		s.FetchInterval = DefaultFetchInterval
	}
	if s.StallTimeout == 0 {
		s.StallTimeout = DefaultStallTimeout
	}
	defInt(&s.MaxPerFetch, DefaultMaxPerFetch)
	if s.AfterFetch.Action == "" {
		s.AfterFetch.Action = ActionMarkSeen
	}
	if s.Auth.Method == AuthOAuth2 && s.Auth.OAuth.Provider == ProviderMicrosoft {
		def(&s.Auth.OAuth.Tenant, DefaultTenant)
	}
}

func def(p *string, v string) {
	if *p == "" {
		*p = v
	}
}

func defInt(p *int, v int) {
	if *p == 0 {
		*p = v
	}
}
