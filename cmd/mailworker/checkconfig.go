package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/mailworker/mailworker/config"
)

func init() {
	register(&command{
		name:    "check-config",
		usage:   "",
		summary: "load and validate the configuration; print its servers or every error",
		run:     cmdCheckConfig,
	})
}

// cmdCheckConfig loads the configuration like every other verb and reports
// the result: "FILE: OK, N servers" and a table on success (exit 0), or every
// error as FILE:LINE: KEY: REASON on stderr (exit 1). It contacts no server.
func cmdCheckConfig(env *cliEnv, args []string) int {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	cfgPath := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "check-config: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	path := resolveConfigPath(env, *cfgPath)
	cfg, err := loadConfig(env, *cfgPath)
	if err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			fmt.Fprintln(env.stderr, errs.Error())
			fmt.Fprintf(env.stderr, "%s: %d error%s\n", path, len(errs), plural(len(errs)))
		} else {
			fmt.Fprintln(env.stderr, err)
		}
		return 1
	}
	fmt.Fprintf(env.stdout, "%s: OK, %d server%s\n", path, len(cfg.Servers), plural(len(cfg.Servers)))
	if len(cfg.Servers) > 0 {
		fmt.Fprintln(env.stdout)
		if err := printServers(env.stdout, cfg.Servers); err != nil {
			fmt.Fprintln(env.stderr, "check-config:", err)
			return 1
		}
	}
	for _, w := range unsetEnv(cfg, env.getenv) {
		fmt.Fprintln(env.stderr, "warning:", w)
	}
	if err := cfg.Admin.Problem(env.getenv); err != nil {
		fmt.Fprintf(env.stderr, "warning: the admin listener will not start (fetching is not affected): %v\n", err)
	}
	return 0
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// printServers writes one row per server.
func printServers(w io.Writer, servers []config.Server) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPROTOCOL\tENDPOINT\tFOLDER\tEVERY\tAFTER FETCH\tAUTH\tFLAGS")
	for i := range servers {
		s := &servers[i]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Protocol, s.Endpoint(), s.Folder,
			s.FetchInterval, s.AfterFetch, authSummary(s), strings.Join(serverFlags(s), ","))
	}
	return tw.Flush()
}

func authSummary(s *config.Server) string {
	if s.Auth.Method != config.AuthOAuth2 {
		return string(s.Auth.Method)
	}
	o := s.Auth.OAuth
	flow := o.Flow
	if flow == "" {
		flow = "auto"
	}
	return fmt.Sprintf("oauth2 %s/%s", o.Provider, flow)
}

func serverFlags(s *config.Server) []string {
	var fl []string
	if s.DisableNewRequests {
		f := "no-new-requests"
		if n := len(s.NewRequestAllow); n > 0 {
			f += fmt.Sprintf("(allow %d)", n)
		}
		fl = append(fl, f)
	}
	if s.EmailDebug {
		fl = append(fl, "email-debug")
	}
	if s.TLS.InsecureSkipVerify {
		fl = append(fl, "tls-insecure")
	}
	if s.PlusAddressTicketRef {
		fl = append(fl, "plus-ticket-ref")
	}
	if n := len(s.TrustedAuthservIDs); n > 0 {
		fl = append(fl, fmt.Sprintf("trusted-authserv(%d)", n))
	}
	if len(fl) == 0 {
		fl = append(fl, "-")
	}
	return fl
}

// unsetEnv lists the *_env references whose variable is empty here. They
// are warnings, not errors: the service may run with another environment.
func unsetEnv(cfg *config.Config, getenv func(string) string) []string {
	var out []string
	check := func(key, name string) {
		if name != "" && getenv(name) == "" {
			out = append(out, fmt.Sprintf("%s: environment variable %s is not set", key, name))
		}
	}
	// admin.token_env is reported by Admin.Problem.
	for _, s := range cfg.Servers {
		p := "servers." + s.Name + ".auth."
		check(p+"password_env", s.Auth.PasswordEnv)
		check(p+"oauth.client_secret_env", s.Auth.OAuth.ClientSecretEnv)
	}
	return out
}
