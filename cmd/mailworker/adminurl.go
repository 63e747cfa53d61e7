package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/mailworker/mailworker/worker"
)

func init() {
	register(&command{
		name:    "admin-url",
		usage:   "",
		summary: "print a one-time login link for the running worker's admin listener",
		run:     cmdAdminURL,
	})
}

// cmdAdminURL prints http://<admin.listen>/login?code=CODE: CODE is signed
// with the admin token (the configured one, or the one `run` generated in
// data_dir), is valid for worker.LoginCodeTTL and works once. The token
// itself is never printed.
func cmdAdminURL(env *cliEnv, args []string) int {
	fs := flag.NewFlagSet("admin-url", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	cfgPath := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := loadConfig(env, *cfgPath)
	if err != nil {
		fmt.Fprintln(env.stderr, err)
		return 1
	}
	listen := cfg.Admin.Listen
	if listen == "off" {
		fmt.Fprintln(env.stderr, "admin-url: admin.listen is off")
		return 1
	}
	host, p, err := net.SplitHostPort(listen)
	port, perr := strconv.Atoi(p)
	if err != nil || perr != nil || port == 0 {
		fmt.Fprintf(env.stderr, "admin-url: admin.listen %q names no fixed port\n", listen)
		return 1
	}
	tok, _, err := worker.AdminToken(cfg, env.getenv, false)
	if err != nil {
		if errors.Is(err, worker.ErrNoAdminToken) {
			fmt.Fprintln(env.stderr, "admin-url:", err)
		} else {
			fmt.Fprintln(env.stderr, "admin-url: read the admin token:", err)
		}
		return 1
	}
	fmt.Fprintln(env.stdout, worker.AdminBaseURL(host, port)+"/login?code="+worker.AdminLoginCode(tok, time.Now()))
	fmt.Fprintf(env.stderr, "one-time link, valid for %d minutes\n", int(worker.LoginCodeTTL/time.Minute))
	return 0
}
