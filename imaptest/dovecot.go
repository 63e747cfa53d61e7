package imaptest

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

// DovecotBinary is where Debian's dovecot-imapd package installs the daemon.
const DovecotBinary = "/usr/sbin/dovecot"

// dovecotStartTimeout bounds how long StartDovecot waits for the greeting.
const dovecotStartTimeout = 15 * time.Second

// DovecotOptions configures StartDovecot.
type DovecotOptions struct {
	// Users maps user names to passwords (passdb passwd-file, mechanisms
	// PLAIN and LOGIN). Default {"alice": "secret"} unless IntrospectionURL
	// is set.
	Users map[string]string
	// IntrospectionURL switches the passdb to oauth2 (mechanisms XOAUTH2 and
	// OAUTHBEARER): Dovecot POSTs token=<token> there (RFC 7662) and expects
	// {"active": true, "username": "<user>"} for a valid token.
	IntrospectionURL string
	// Capability, when set, replaces the CAPABILITY Dovecot advertises
	// (imap_capability); AUTH= mechanisms are still added before login.
	// E.g. "IMAP4rev1 ID ENABLE IDLE" for a server without SASL-IR and
	// LITERAL+.
	Capability string
	// Mechanisms replaces the SASL mechanisms of the passwd-file passdb
	// (default plain and login), e.g. []string{"login"} for a server that
	// offers no AUTH=PLAIN, so clients use the IMAP LOGIN command.
	Mechanisms []string
}

// Dovecot is a running Dovecot instance, private to one test: its own
// configuration, certificate, Maildirs and free loopback ports (imaps, and
// imap with STARTTLS), stopped at cleanup.
type Dovecot struct {
	t        testing.TB
	dir      string
	conf     string
	certs    *certs
	opts     DovecotOptions
	imapsAdr string
	imapAdr  string
	cmd      *exec.Cmd
	waitErr  chan error
	uid, gid int // owner of the Maildirs (-1: leave as is)
}

var dovecotSeq atomic.Int64

// StartDovecot runs the system's Dovecot (DovecotBinary, `dovecot -F -c
// conf`). When the binary is missing the test is skipped, unless
// MAILWORKER_TEST_REQUIRE_DOVECOT=1, which fails it. Run as root (as in CI),
// mail is owned by nobody:nogroup; otherwise by the current user.
func StartDovecot(t testing.TB, opts DovecotOptions) *Dovecot {
	t.Helper()
	if _, err := os.Stat(DovecotBinary); err != nil {
		if os.Getenv("MAILWORKER_TEST_REQUIRE_DOVECOT") == "1" {
			t.Fatalf("imaptest: dovecot required but %s missing (apt-get install -y dovecot-imapd)", DovecotBinary)
		}
		t.Skipf("imaptest: %s not installed (apt-get install -y dovecot-imapd); skipping Dovecot test", DovecotBinary)
	}
	if opts.Users == nil && opts.IntrospectionURL == "" {
		opts.Users = map[string]string{"alice": "secret"}
	}
	// A short private directory: Dovecot's unix sockets live under base_dir
	// and socket paths are limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "mwdc")
	if err != nil {
		t.Fatalf("imaptest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // mail processes run as nobody
		t.Fatalf("imaptest: %v", err)
	}
	d := &Dovecot{t: t, dir: dir, opts: opts, certs: newCerts(t, dir), uid: -1, gid: -1}
	d.imapsAdr, d.imapAdr = freePort(t), freePort(t)
	if err := d.writeConfig(); err != nil {
		t.Fatalf("imaptest: dovecot config: %v", err)
	}
	d.start()
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			if log, err := os.ReadFile(filepath.Join(dir, "dovecot.log")); err == nil {
				t.Logf("dovecot.log:\n%s", tail(log, 4000))
			}
		}
	})
	return d
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// freePort returns a 127.0.0.1 address that was free a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("imaptest: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (d *Dovecot) writeConfig() error {
	internalUser, loginUser := "dovecot", "dovenull"
	mailUser, mailGroup := "nobody", "nogroup"
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			return err
		}
		g, err := user.LookupGroupId(u.Gid)
		if err != nil {
			return err
		}
		internalUser, loginUser, mailUser, mailGroup = u.Username, u.Username, u.Username, g.Name
	} else {
		u, err := user.Lookup(mailUser)
		if err != nil {
			return err
		}
		g, err := user.LookupGroup(mailGroup)
		if err != nil {
			return err
		}
		d.uid, _ = strconv.Atoi(u.Uid)
		d.gid, _ = strconv.Atoi(g.Gid)
	}
	_, imapsPort, _ := net.SplitHostPort(d.imapsAdr)
	_, imapPort, _ := net.SplitHostPort(d.imapAdr)
	var auth string
	if d.opts.IntrospectionURL != "" {
		oauthConf := filepath.Join(d.dir, "oauth2.conf.ext")
		err := os.WriteFile(oauthConf, []byte(fmt.Sprintf(`introspection_url = %s
introspection_mode = post
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
`, d.opts.IntrospectionURL)), 0o644)
		if err != nil {
			return err
		}
		auth = fmt.Sprintf(`auth_mechanisms = xoauth2 oauthbearer
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = %s
}
`, oauthConf)
	} else {
		var pw bytes.Buffer
		names := make([]string, 0, len(d.opts.Users))
		for n := range d.opts.Users {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(&pw, "%s:{PLAIN}%s\n", n, d.opts.Users[n])
		}
		passwd := filepath.Join(d.dir, "passwd")
		if err := os.WriteFile(passwd, pw.Bytes(), 0o644); err != nil {
			return err
		}
		mechs := "plain login"
		if len(d.opts.Mechanisms) > 0 {
			mechs = strings.Join(d.opts.Mechanisms, " ")
		}
		auth = fmt.Sprintf(`auth_mechanisms = %s
passdb {
  driver = passwd-file
  args = %s
}
`, mechs, passwd)
	}
	conf := fmt.Sprintf(`instance_name = mwtest-%d-%d
base_dir = %[3]s/run
state_dir = %[3]s/state
log_path = %[3]s/dovecot.log
info_log_path = %[3]s/dovecot.log
default_internal_user = %[4]s
default_login_user = %[5]s
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <%[6]s
ssl_key = <%[7]s
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_verbose = yes
mail_fsync = never
%[8]s
userdb {
  driver = static
  args = uid=%[9]s gid=%[10]s home=%[3]s/mail/%%n
}
mail_location = maildir:~/Maildir
namespace inbox {
  inbox = yes
  separator = /
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %[11]s
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = %[12]s
    ssl = yes
  }
}
`, os.Getpid(), dovecotSeq.Add(1), d.dir, internalUser, loginUser, d.certs.certFile, d.certs.keyFile, auth, mailUser, mailGroup, imapPort, imapsPort)
	if d.opts.Capability != "" {
		conf += "imap_capability = " + d.opts.Capability + "\n"
	}
	if _, err := os.Stat("/usr/share/dovecot/dh.pem"); err == nil {
		conf += "ssl_dh = </usr/share/dovecot/dh.pem\n"
	}
	d.conf = filepath.Join(d.dir, "dovecot.conf")
	if err := os.MkdirAll(filepath.Join(d.dir, "mail"), 0o755); err != nil {
		return err
	}
	if d.uid >= 0 {
		if err := os.Chown(filepath.Join(d.dir, "mail"), d.uid, d.gid); err != nil {
			return err
		}
	}
	return os.WriteFile(d.conf, []byte(conf), 0o644)
}

// start runs the daemon in its own process group and waits for the imaps
// greeting.
func (d *Dovecot) start() {
	d.t.Helper()
	cmd := exec.Command(DovecotBinary, "-F", "-c", d.conf)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		d.t.Fatalf("imaptest: start dovecot: %v", err)
	}
	d.cmd = cmd
	d.waitErr = make(chan error, 1)
	go func() { d.waitErr <- cmd.Wait() }()
	deadline := time.Now().Add(dovecotStartTimeout)
	for {
		select {
		case err := <-d.waitErr:
			d.cmd = nil
			log, _ := os.ReadFile(filepath.Join(d.dir, "dovecot.log"))
			d.t.Fatalf("imaptest: dovecot exited: %v\n%s\n%s", err, stderr.String(), tail(log, 4000))
		default:
		}
		if greeted(d.imapAdr) {
			return
		}
		if time.Now().After(deadline) {
			d.stop()
			d.t.Fatalf("imaptest: dovecot did not answer on %s within %v: %s", d.imapAdr, dovecotStartTimeout, stderr.String())
		}
		time.Sleep(20 * time.Millisecond) // polling a port: there is nothing to wait on
	}
}

// greeted reports whether addr sends an IMAP greeting.
func greeted(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "* OK")
}

// stop terminates the daemon's process group and waits for it.
func (d *Dovecot) stop() {
	if d.cmd == nil {
		return
	}
	pgid := d.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-d.waitErr:
	case <-time.After(10 * time.Second):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-d.waitErr
	}
	// Children (auth, imap, log) exit with the master; make sure none stays.
	syscall.Kill(-pgid, syscall.SIGKILL)
	d.cmd = nil
}

// Stop stops the server; Restart starts it again on the same ports with the
// same data.
func (d *Dovecot) Stop() { d.stop() }

// Restart stops the server if it runs and starts it again.
func (d *Dovecot) Restart() {
	d.t.Helper()
	d.stop()
	d.start()
}

// Addr is the imaps address (127.0.0.1:port).
func (d *Dovecot) Addr() string { return d.imapsAdr }

// Port is the imaps port.
func (d *Dovecot) Port() int { return portOf(d.imapsAdr) }

// StartTLSAddr is the imap address, where STARTTLS is required before login.
func (d *Dovecot) StartTLSAddr() string { return d.imapAdr }

// StartTLSPort is the STARTTLS port.
func (d *Dovecot) StartTLSPort() int { return portOf(d.imapAdr) }

// CAFile is a PEM file with the server's certificate, for tls.ca_file.
func (d *Dovecot) CAFile() string { return d.certs.certFile }

// CertPool trusts the server's certificate.
func (d *Dovecot) CertPool() *x509.CertPool { return d.certs.pool }

// maildir returns the Maildir++ directory of user's folder ("INBOX" or a
// subfolder name with "/" separators).
func (d *Dovecot) maildir(user, folder string) string {
	base := filepath.Join(d.dir, "mail", user, "Maildir")
	if strings.EqualFold(folder, "INBOX") {
		return base
	}
	return filepath.Join(base, "."+strings.ReplaceAll(folder, "/", "."))
}

var seedSeq atomic.Int64

// SeedMaildir writes msgs as new (unseen) mail into user's folder, straight
// into the Maildir, before or while the server runs; the folder is created
// when missing. File names carry ,S=<size>,W=<vsize> so Dovecot need not
// read them to learn sizes. Failures fail the test.
func (d *Dovecot) SeedMaildir(user, folder string, msgs [][]byte) {
	d.t.Helper()
	d.seed(user, folder, msgs, "")
}

// SeedMaildirFlags is SeedMaildir for mail already carrying Maildir flags,
// e.g. "S" for \Seen (letters in ASCII order: D F R S T).
func (d *Dovecot) SeedMaildirFlags(user, folder string, msgs [][]byte, flags string) {
	d.t.Helper()
	d.seed(user, folder, msgs, flags)
}

func (d *Dovecot) seed(user, folder string, msgs [][]byte, flags string) {
	d.t.Helper()
	md := d.maildir(user, folder)
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(md, sub), 0o700); err != nil {
			d.t.Fatalf("imaptest: seed: %v", err)
		}
	}
	if !strings.EqualFold(folder, "INBOX") {
		if err := os.WriteFile(filepath.Join(md, "maildirfolder"), nil, 0o600); err != nil {
			d.t.Fatalf("imaptest: seed: %v", err)
		}
	}
	now := time.Now().Unix()
	for _, m := range msgs {
		vsize := len(m) + bytes.Count(m, []byte("\n")) - bytes.Count(m, []byte("\r\n"))
		base := fmt.Sprintf("%d.M%dP%d.mwtest,S=%d,W=%d", now, seedSeq.Add(1), os.Getpid(), len(m), vsize)
		tmp := filepath.Join(md, "tmp", base)
		if err := os.WriteFile(tmp, m, 0o600); err != nil {
			d.t.Fatalf("imaptest: seed: %v", err)
		}
		dst := filepath.Join(md, "new", base)
		if flags != "" {
			dst = filepath.Join(md, "cur", base+":2,"+flags)
		}
		if d.uid >= 0 {
			if err := os.Chown(tmp, d.uid, d.gid); err != nil {
				d.t.Fatalf("imaptest: seed: %v", err)
			}
		}
		if err := os.Rename(tmp, dst); err != nil {
			d.t.Fatalf("imaptest: seed: %v", err)
		}
	}
	if d.uid >= 0 {
		// the directories created above (and the user's home) belong to the mail user
		// Dovecot may be running: its lock and temporary files come and go
		// during the walk, and a vanished file needs no owner.
		err := filepath.Walk(filepath.Join(d.dir, "mail"), func(p string, fi os.FileInfo, err error) error {
			if err == nil {
				err = os.Lchown(p, d.uid, d.gid)
			}
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		})
		if err != nil {
			d.t.Fatalf("imaptest: seed: %v", err)
		}
	}
}

var maildirFlags = map[byte]imap.Flag{'S': imap.FlagSeen, 'T': imap.FlagDeleted, 'F': imap.FlagFlagged, 'R': imap.FlagAnswered, 'D': imap.FlagDraft}

// Messages reads user's folder straight from the Maildir: every message
// with its flags and, when Dovecot has assigned one, its UID (from
// dovecot-uidlist; 0 otherwise), ordered by UID then name. A folder that
// does not exist yields nil.
func (d *Dovecot) Messages(user, folder string) []Msg {
	d.t.Helper()
	md := d.maildir(user, folder)
	uids := readUIDList(filepath.Join(md, "dovecot-uidlist"))
	type entry struct {
		name string
		msg  Msg
	}
	var all []entry
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(md, sub))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			d.t.Fatalf("imaptest: read maildir: %v", err)
		}
		for _, e := range ents {
			body, err := os.ReadFile(filepath.Join(md, sub, e.Name()))
			if err != nil {
				if errors.Is(err, os.ErrNotExist) { // renamed by Dovecot meanwhile
					continue
				}
				d.t.Fatalf("imaptest: read maildir: %v", err)
			}
			base, info, _ := strings.Cut(e.Name(), ":2,")
			var flags []imap.Flag
			for i := 0; i < len(info); i++ {
				if f, ok := maildirFlags[info[i]]; ok {
					flags = append(flags, f)
				}
			}
			all = append(all, entry{base, Msg{UID: uids[base], Flags: flags, Body: body}})
		}
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].msg.UID != all[j].msg.UID {
			return all[i].msg.UID < all[j].msg.UID
		}
		return all[i].name < all[j].name
	})
	out := make([]Msg, len(all))
	for i, e := range all {
		out[i] = e.msg
	}
	return out
}

// readUIDList parses dovecot-uidlist (version 3): a header line, then
// "<uid> [extensions] :<base name>" per message.
func readUIDList(path string) map[string]imap.UID {
	m := map[string]imap.UID{}
	b, err := os.ReadFile(path)
	if err != nil {
		return m
	}
	lines := strings.Split(string(b), "\n")
	for _, l := range lines[1:] {
		num, rest, ok := strings.Cut(l, " ")
		if !ok {
			continue
		}
		i := strings.Index(rest, ":")
		if i < 0 {
			continue
		}
		u, err := strconv.ParseUint(num, 10, 32)
		if err != nil {
			continue
		}
		m[rest[i+1:]] = imap.UID(u)
	}
	return m
}

// ResetUIDValidity makes Dovecot give user's folder a new UIDVALIDITY, as
// a server does after a mailbox is rebuilt: the server is stopped, the
// folder's UID list and indexes are removed (the mail stays), and it is
// started again. Every message then has a new UID.
func (d *Dovecot) ResetUIDValidity(user, folder string) {
	d.t.Helper()
	d.stop()
	md := d.maildir(user, folder)
	entries, err := os.ReadDir(md)
	if err != nil {
		d.t.Fatalf("imaptest: reset uidvalidity: %v", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "dovecot-uidlist") || strings.HasPrefix(e.Name(), "dovecot.index") {
			if err := os.Remove(filepath.Join(md, e.Name())); err != nil {
				d.t.Fatalf("imaptest: reset uidvalidity: %v", err)
			}
		}
	}
	d.start()
}
