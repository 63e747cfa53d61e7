package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/parser"
	"github.com/mailworker/mailworker/publisher"
)

func init() {
	register(&command{
		name:    "parse",
		usage:   "[--config FILE] [--server NAME] FILE|- [FILE…]",
		summary: "parse .eml files and print one event (schema v1) per file as JSON",
		run:     runParse,
	})
}

// runParse prints one JSON event per file, in the order given. A file that
// cannot be read or parsed is reported on stderr and the exit status is 1;
// the other files are still printed.
func runParse(env *cliEnv, args []string) int {
	flags := flag.NewFlagSet("parse", flag.ContinueOnError)
	flags.SetOutput(env.stderr)
	cfgPath := configFlag(flags) // optional here: only the parser section (and --server's settings) is used
	server := flags.String("server", "", "parse as server `NAME` of the configuration would (its addresses, plus_address_ticket_ref, trusted_authserv_ids; sets server, mailbox and id)")
	if err := flags.Parse(args); err != nil {
		return 2
	}
	if flags.NArg() == 0 {
		fmt.Fprintln(env.stderr, "usage: mailworker parse [--config FILE] [--server NAME] FILE|- [FILE…]")
		return 2
	}
	opts, srv, err := parseOptions(env, *cfgPath, *server)
	if err != nil {
		fmt.Fprintf(env.stderr, "mailworker parse: %v\n", err)
		return 2
	}
	status := 0
	enc := json.NewEncoder(env.stdout)
	enc.SetEscapeHTML(false)
	for _, name := range flags.Args() {
		ev, err := parseFile(env, name, opts, srv)
		if err != nil {
			fmt.Fprintf(env.stderr, "mailworker parse: %s: %v\n", name, err)
			status = 1
			continue
		}
		if err := enc.Encode(ev); err != nil {
			fmt.Fprintf(env.stderr, "mailworker parse: writing output: %v\n", err)
			return 1
		}
	}
	return status
}

// parseOptions uses the configuration's parser section (limits, ticket
// patterns, loop header) when a configuration is named (--config, else
// $MAILWORKER_CONFIG) or ./mailworker.yaml exists; otherwise the defaults,
// so parse works without any configuration. With a server name, that
// server's settings apply too and it is returned.
func parseOptions(env *cliEnv, flagValue, server string) (parser.Options, *config.Server, error) {
	path := resolveConfigPath(env, flagValue)
	cfg, err := loadConfigOrDefaults(env, flagValue)
	if err != nil {
		return parser.Options{}, nil, fmt.Errorf("config %s: %w", path, err)
	}
	opts, err := parser.OptionsFromConfig(cfg.Parser)
	if err != nil || server == "" {
		return opts, nil, err
	}
	srv, ok := cfg.Server(server)
	if !ok {
		return parser.Options{}, nil, fmt.Errorf("config %s: no server named %q", path, server)
	}
	return opts.ForServer(*srv), srv, nil
}

// parseFile reads one file ("-" is stdin) and builds its event. The raw
// bytes are hashed while the parser streams them.
func parseFile(env *cliEnv, name string, opts parser.Options, srv *config.Server) (*publisher.Event, error) {
	var r io.Reader
	if name == "-" {
		r = env.stdin
	} else {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close() // read-only: a close error loses nothing
		r = f
	}
	h := sha256.New()
	cr := &countReader{r: io.TeeReader(r, h)}
	m, err := parser.Parse(bufio.NewReaderSize(cr, 64*1024), opts)
	if err != nil {
		if errors.Is(err, parser.ErrEmpty) {
			return nil, fmt.Errorf("no message in it: %w", err)
		}
		return nil, err
	}
	// hash what the parser left unread (over the size limit)
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return nil, err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	server, mailbox := "", ""
	if srv != nil {
		server, mailbox = srv.Name, srv.MailboxID()
	}
	return &publisher.Event{
		Schema:     publisher.SchemaV1,
		ID:         publisher.EventID(server, mailbox, sum),
		Server:     server,
		Mailbox:    mailbox,
		Kind:       publisher.Classify(m, false),
		ReceivedAt: time.Now().UTC(),
		Raw:        publisher.Raw{Size: cr.n, SHA256: sum},
		Message:    m,
	}, nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}
