// Command mailworker fetches mail from incoming mail servers, parses every
// message into a versioned event and publishes it to NATS JetStream.
//
// Usage: mailworker VERB [flags] [args]; `mailworker help` lists the verbs.
// Every verb takes --config FILE; without it $MAILWORKER_CONFIG, then
// ./mailworker.yaml is used.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// command is one CLI verb. Each verb lives in its own file and registers
// itself from an init function (registration only; no I/O).
type command struct {
	name    string
	usage   string // one line: arguments after the verb
	summary string // one line: what it does
	// run executes the verb with the arguments after it and returns the
	// process exit status.
	run func(env *cliEnv, args []string) int
}

var commands = map[string]*command{}

func register(c *command) {
	if _, dup := commands[c.name]; dup {
		panic("mailworker: verb registered twice: " + c.name)
	}
	commands[c.name] = c
}

// cliEnv is what every verb gets: its standard streams and environment, so
// tests can run verbs in process.
type cliEnv struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
}

func main() {
	env := &cliEnv{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	os.Exit(runCLI(env, os.Args[1:]))
}

func runCLI(env *cliEnv, args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(env.stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(env.stderr, "mailworker: unknown verb %q\n\n", args[0])
		usage(env.stderr)
		return 2
	}
	return c.run(env, args[1:])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: mailworker VERB [--config FILE] [flags] [args]")
	fmt.Fprintln(w)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := commands[n]
		fmt.Fprintf(w, "  %-40s %s\n", strings.TrimSpace(n+" "+c.usage), c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Without --config, $MAILWORKER_CONFIG, then ./mailworker.yaml is read.")
}
