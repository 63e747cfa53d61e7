package fetcher

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/go-ntlmssp"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/spool"
)

// ewsMaxChanges is the most changes one SyncFolderItems call may return
// (https://learn.microsoft.com/exchange/client-developer/web-service-reference/maxchangesreturned).
const ewsMaxChanges = 512

// defaultMaxPerFetch applies when a server's max_per_fetch is unset.
const defaultMaxPerFetch = 500

// errUnauthorized marks an HTTP 401 inside one call, before the retry with
// a refreshed token decides whether it becomes ErrAuth.
var errUnauthorized = errors.New("HTTP 401 Unauthorized")

// EWS fetches one folder of an Exchange mailbox over Exchange Web Services
// (on-premises Exchange; Exchange Online should use Graph, see
// docs/exchange.md).
//
// New mail is found with SyncFolderItems; its SyncState is the checkpoint,
// stored only after every message of a page is acknowledged by the Sink.
// Messages are read with GetItem (MIME content, streamed into a spool) and,
// once acknowledged, marked read, moved or deleted as after_fetch says.
// Authentication is Basic (auth method password), NTLM (ntlm) or an OAuth
// bearer token (oauth2), with ExchangeImpersonation and X-AnchorMailbox
// when the server's impersonate is set.
type EWS struct {
	srv    config.Server
	deps   Deps
	h      *exchangeHTTP
	rt     *http.Transport
	env    ewsEnvelopeOpts
	url    string
	folder *ewsFolderRef // resolved source folder, cached
	moveTo *ewsFolderRef // resolved move destination, cached
}

// NewEWS returns an EWS fetcher for srv. It does no I/O. deps.Logger may be
// nil; zero Timeouts mean the defaults.
func NewEWS(srv config.Server, deps Deps) (*EWS, error) {
	if srv.EWSURL == "" {
		return nil, fmt.Errorf("fetcher %s: ews_url is required", srv.Name)
	}
	u, err := url.Parse(srv.EWSURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("fetcher %s: invalid ews_url %q", srv.Name, srv.EWSURL)
	}
	switch srv.Auth.Method {
	case config.AuthPassword, config.AuthNTLM, config.AuthOAuth2:
	default:
		return nil, fmt.Errorf("fetcher %s: ews needs auth method password, ntlm or oauth2, not %q", srv.Name, srv.Auth.Method)
	}
	if deps.Credentials == nil {
		return nil, fmt.Errorf("fetcher %s: no credentials", srv.Name)
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	deps.Timeouts = deps.Timeouts.withDefaults()
	version := srv.EWSVersion
	if version == "" {
		version = DefaultEWSVersion
	}
	// The server's tls section (ca_file, server_name, client certificate,
	// insecure_skip_verify) applies to HTTPS as it does to IMAP.
	tlsConf, err := imapTLSConfig(srv, deps.TLSConfig)
	if err != nil {
		return nil, fmt.Errorf("fetcher %s: %w", srv.Name, err)
	}
	tr := newTransport(tlsConf, stallTimeout(srv, deps))
	var rt http.RoundTripper = tr
	if srv.Auth.Method == config.AuthNTLM {
		// NTLM authenticates a connection, which HTTP/2 multiplexing
		// breaks (IIS refuses it with HTTP_1_1_REQUIRED): stay on HTTP/1.1.
		tr.ForceAttemptHTTP2 = false
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		// go-ntlmssp turns the request's Basic credentials into the NTLM
		// handshake; it never sends them as Basic (AllowBasicAuth false).
		rt = ntlmssp.Negotiator{RoundTripper: tr}
	}
	e := &EWS{
		srv:  srv,
		deps: deps,
		rt:   tr,
		url:  srv.EWSURL,
		env:  ewsEnvelopeOpts{version: version, impersonate: srv.Impersonate},
	}
	e.h = newExchangeHTTP(srv.Name, deps, srv.EmailDebug, rt, 0)
	return e, nil
}

func (e *EWS) folderName() string {
	if e.srv.Folder == "" {
		return "inbox"
	}
	return e.srv.Folder
}

func (e *EWS) authMethod() string {
	switch e.srv.Auth.Method {
	case config.AuthNTLM:
		return "NTLM"
	case config.AuthOAuth2:
		return "Bearer"
	}
	return "Basic"
}

// soapCall is one EWS request.
type soapCall struct {
	op   string
	body string
}

// send posts the operation and returns the response, retried on
// throttling and, for OAuth, once with a refreshed token after a 401.
// parse handles a 200 response's body; it may return a *throttleError.
func (e *EWS) send(ctx context.Context, sc soapCall, stream bool, parse func(*http.Response) error) error {
	payload := ewsEnvelope(e.env, sc.body)
	for authTry := 0; ; authTry++ {
		refresh := authTry > 0
		c := call{
			op:      sc.op,
			stream:  stream,
			logBody: payload,
			build: func(ctx context.Context) (*http.Request, error) {
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, strings.NewReader(payload))
				if err != nil {
					return nil, err
				}
				req.Header.Set("Content-Type", "text/xml; charset=utf-8")
				req.Header.Set("Accept", "text/xml")
				req.Header.Set("SOAPAction", `"`+nsMessages+"/"+sc.op+`"`)
				if e.srv.Impersonate != "" {
					req.Header.Set("X-AnchorMailbox", e.srv.Impersonate)
				}
				if err := e.authorize(ctx, req, refresh); err != nil {
					return nil, err
				}
				return req, nil
			},
		}
		if stream {
			c.timeout = e.deps.Timeouts.Literal
		}
		attempt := 0
		for {
			resp, err := e.h.do(ctx, c, e.checkStatus(sc.op))
			if errors.Is(err, errUnauthorized) {
				if e.srv.Auth.Method == config.AuthOAuth2 && authTry == 0 {
					break // retry once with a fresh token
				}
				return fmt.Errorf("ews %s %s: server refused %s credentials (%v): %w", e.srv.Name, sc.op, e.authMethod(), err, ErrAuth)
			}
			if err != nil {
				return err
			}
			err = parse(resp)
			if cerr := resp.Body.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("ews %s %s: close response: %w", e.srv.Name, sc.op, cerr)
			}
			var te *throttleError
			if errors.As(err, &te) {
				if err := e.h.wait(ctx, sc.op, te, attempt); err != nil {
					return err
				}
				attempt++
				continue
			}
			return err
		}
	}
}

// authorize sets the request's credentials.
func (e *EWS) authorize(ctx context.Context, req *http.Request, refresh bool) error {
	switch e.srv.Auth.Method {
	case config.AuthOAuth2:
		tok, err := e.deps.Credentials.AccessToken(ctx, refresh)
		if err != nil {
			return fmt.Errorf("access token: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	default:
		pw, err := e.deps.Credentials.Password()
		if err != nil {
			return fmt.Errorf("password: %w", err)
		}
		// With NTLM the Negotiator turns these into the handshake.
		req.SetBasicAuth(e.srv.Username, pw)
	}
	return nil
}

// checkStatus maps HTTP statuses: 401 to errUnauthorized, 429/503 to a
// throttled retry, and a 500 with a SOAP fault to *EWSError (or a retry
// for ErrorServerBusy).
func (e *EWS) checkStatus(op string) func(*http.Response) error {
	return func(resp *http.Response) error {
		switch {
		case resp.StatusCode == http.StatusOK:
			return nil
		case resp.StatusCode == http.StatusUnauthorized:
			return fmt.Errorf("%w; server offers %s", errUnauthorized, offeredSchemes(resp.Header))
		case resp.StatusCode == http.StatusForbidden:
			return fmt.Errorf("ews %s %s: HTTP 403 Forbidden: %w", e.srv.Name, op, ErrAuth)
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable:
			return &throttleError{wait: retryAfter(resp.Header), why: "HTTP " + resp.Status}
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20)) // best effort: the status already says it failed
		var env ewsResponseEnvelope
		if xml.Unmarshal(b, &env) == nil && env.Body.Fault != nil {
			ee := env.Body.Fault.err(e.srv.Name, op, resp.StatusCode)
			if ee.Code == EWSErrorServerBusy {
				return &throttleError{wait: ee.BackOff, why: "ErrorServerBusy"}
			}
			return ee
		}
		return &EWSError{Server: e.srv.Name, Operation: op, Code: "HTTP" + fmt.Sprint(resp.StatusCode), Message: resp.Status, HTTP: resp.StatusCode}
	}
}

// do sends a non-streaming operation and returns its first response
// message (and the envelope, for the server version). A response message
// of class Error becomes an *EWSError; ErrorServerBusy is waited out.
func (e *EWS) do(ctx context.Context, sc soapCall) (*ewsResponseMessage, *ewsResponseEnvelope, error) {
	var env ewsResponseEnvelope
	var msg *ewsResponseMessage
	err := e.send(ctx, sc, false, func(resp *http.Response) error {
		env = ewsResponseEnvelope{}
		if err := xml.NewDecoder(resp.Body).Decode(&env); err != nil {
			return fmt.Errorf("ews %s %s: parse response: %w", e.srv.Name, sc.op, err)
		}
		if env.Body.Fault != nil {
			ee := env.Body.Fault.err(e.srv.Name, sc.op, resp.StatusCode)
			if ee.Code == EWSErrorServerBusy {
				return &throttleError{wait: ee.BackOff, why: "ErrorServerBusy"}
			}
			return ee
		}
		if env.Body.Response == nil || len(env.Body.Response.Messages.List) == 0 {
			return fmt.Errorf("ews %s %s: response has no response message", e.srv.Name, sc.op)
		}
		msg = &env.Body.Response.Messages.List[0]
		if ee := msg.err(e.srv.Name, sc.op); ee != nil {
			if ee.Code == EWSErrorServerBusy {
				return &throttleError{wait: ee.BackOff, why: "ErrorServerBusy"}
			}
			return ee
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return msg, &env, nil
}

// getMIME streams the MIME content of item id into w and returns its
// DateTimeReceived (zero when absent).
func (e *EWS) getMIME(ctx context.Context, id string, sp *spool.Spool) (time.Time, error) {
	var received time.Time
	err := e.send(ctx, soapCall{op: "GetItem", body: ewsGetItemMIMEBody(id)}, true, func(resp *http.Response) error {
		// A retried attempt starts over; a spool cannot be truncated, so
		// decode into a fresh one and swap it in on success.
		tmp := spool.New(e.deps.SpoolDir, 0)
		res, err := streamGetItemMIME(resp.Body, tmp)
		if err == nil && res.fault != nil {
			err = res.fault.err(e.srv.Name, "GetItem", resp.StatusCode)
		}
		if err == nil {
			if ee := res.respMsg.err(e.srv.Name, "GetItem"); ee != nil {
				err = ee
			} else if !res.found {
				err = fmt.Errorf("ews %s GetItem: response has no MimeContent", e.srv.Name)
			}
		}
		var ee *EWSError
		if errors.As(err, &ee) && ee.Code == EWSErrorServerBusy {
			tmp.Close()
			return &throttleError{wait: ee.BackOff, why: "ErrorServerBusy"}
		}
		if err != nil {
			tmp.Close()
			return err
		}
		if _, err := io.Copy(sp, tmp.Open()); err != nil {
			tmp.Close()
			return fmt.Errorf("ews %s GetItem: spool: %w", e.srv.Name, err)
		}
		if err := tmp.Close(); err != nil {
			return fmt.Errorf("ews %s GetItem: spool: %w", e.srv.Name, err)
		}
		if res.received != "" {
			received, _ = time.Parse(time.RFC3339, res.received) // optional: zero when unparseable
		}
		return nil
	})
	return received, err
}

// resolveFolder turns a folder name into a reference: a distinguished id
// (inbox), or a path ("Inbox/Support") whose first segment may be a
// distinguished id and whose other segments are display names found with
// FindFolder, starting at msgfolderroot.
func (e *EWS) resolveFolder(ctx context.Context, name string) (ewsFolderRef, error) {
	name = strings.Trim(name, "/")
	if name == "" {
		return ewsFolderRef{Distinguished: "inbox"}, nil
	}
	segs := strings.Split(name, "/")
	parent := ewsFolderRef{Distinguished: "msgfolderroot"}
	for i, seg := range segs {
		if i == 0 && ewsDistinguished[strings.ToLower(seg)] {
			parent = ewsFolderRef{Distinguished: strings.ToLower(seg)}
			continue
		}
		msg, _, err := e.do(ctx, soapCall{op: "FindFolder", body: ewsFindFolderBody(parent)})
		if err != nil {
			return ewsFolderRef{}, fmt.Errorf("ews %s: resolve folder %q: %w", e.srv.Name, name, err)
		}
		found := false
		for _, f := range msg.RootFolder.Folders {
			if strings.EqualFold(f.DisplayName, seg) {
				parent = ewsFolderRef{ID: f.FolderID.ID, ChangeKey: f.FolderID.ChangeKey}
				found = true
				break
			}
		}
		if !found {
			return ewsFolderRef{}, fmt.Errorf("ews %s: folder %q: no %q under %s: %w", e.srv.Name, name, seg, parent, ErrNoFolder)
		}
	}
	return parent, nil
}

func (e *EWS) source(ctx context.Context) (ewsFolderRef, error) {
	if e.folder == nil {
		f, err := e.resolveFolder(ctx, e.folderName())
		if err != nil {
			return ewsFolderRef{}, err
		}
		e.folder = &f
	}
	return *e.folder, nil
}

// Fetch implements Fetcher.
func (e *EWS) Fetch(ctx context.Context, sink Sink) (Stats, error) {
	var st Stats
	if e.deps.Checkpoints == nil {
		return st, fmt.Errorf("ews %s: fetch: no checkpoint store", e.srv.Name)
	}
	folder, err := e.source(ctx)
	if err != nil {
		return st, err
	}
	key := e.folderName()
	cp, err := e.deps.Checkpoints.Get(ctx, e.srv.Name, key)
	if err != nil {
		return st, err
	}
	state := cp.SyncState
	max := e.srv.MaxPerFetch
	if max <= 0 {
		max = defaultMaxPerFetch
	}
	processed := 0 // delivered or skipped, counts against max
	restarted := false
	for {
		n := min(ewsMaxChanges, max-processed)
		if n <= 0 {
			st.More = true
			return st, nil
		}
		msg, _, err := e.do(ctx, soapCall{op: "SyncFolderItems", body: ewsSyncFolderItemsBody(folder, state, n)})
		if IsEWSCode(err, EWSErrorInvalidSyncStateData) && state != "" && !restarted {
			// The stored state is no longer valid: sync from scratch. Every
			// message comes again; the Sink's ledger drops those already
			// published, so nothing is published twice.
			e.deps.Logger.Warn("ews sync state rejected, syncing folder from scratch", "account", e.srv.Name, "mailbox", key)
			state, restarted = "", true
			continue
		}
		if err != nil {
			return st, err
		}
		for _, ch := range msg.Changes.List {
			if ch.XMLName.Local != "Create" || ch.Item == nil || ch.Item.ItemID.ID == "" {
				continue // updates, deletions and read-flag changes are not new mail
			}
			st.Seen++
			processed++
			if err := e.deliver(ctx, sink, key, ch.Item.ItemID.ID, &st); err != nil {
				return st, err
			}
		}
		// Every Create of this page is acknowledged (or skipped): the new
		// state may be stored.
		if err := e.deps.Checkpoints.Put(ctx, e.srv.Name, key, Checkpoint{SyncState: msg.SyncState}); err != nil {
			return st, err
		}
		state = msg.SyncState
		if msg.IncludesLast {
			return st, nil
		}
	}
}

// deliver fetches one item, hands it to sink, waits for the ack and
// applies after_fetch. An item deleted since the sync is skipped.
func (e *EWS) deliver(ctx context.Context, sink Sink, folder, id string, st *Stats) error {
	log := e.deps.Logger.With("account", e.srv.Name, "mailbox", folder, "uid", "ews:"+shortID(id))
	sp := spool.New(e.deps.SpoolDir, 0)
	defer sp.Close()
	received, err := e.getMIME(ctx, id, sp)
	if IsEWSCode(err, EWSErrorItemNotFound) {
		log.Info("ews item deleted before it could be fetched, skipped")
		return nil
	}
	if err != nil {
		return err
	}
	msg := &Message{Server: e.srv.Name, Folder: folder, Ref: "ews:" + id, Received: received, Body: sp}
	ack, err := sink.Deliver(ctx, msg)
	if err != nil {
		return fmt.Errorf("ews %s: deliver item %s: %w", e.srv.Name, shortID(id), err)
	}
	if err := ack.Wait(ctx); err != nil {
		return fmt.Errorf("ews %s: ack item %s: %w", e.srv.Name, shortID(id), err)
	}
	st.Delivered++
	st.Bytes += sp.Size()
	if e.srv.EmailDebug {
		log.Debug("ews message delivered", "bytes", sp.Size(), "after_fetch", e.srv.AfterFetch.String())
	}
	return e.afterFetch(ctx, id, log)
}

// afterFetch applies the server's after_fetch action to an acknowledged
// item. An item that is gone already counts as done.
func (e *EWS) afterFetch(ctx context.Context, id string, log *slog.Logger) error {
	var sc soapCall
	switch e.srv.AfterFetch.Action {
	case config.ActionNone:
		return nil
	case config.ActionDelete:
		sc = soapCall{op: "DeleteItem", body: ewsDeleteItemBody(id)}
	case config.ActionMove:
		if e.moveTo == nil {
			f, err := e.resolveFolder(ctx, e.srv.AfterFetch.Folder)
			if err != nil {
				return err
			}
			e.moveTo = &f
		}
		sc = soapCall{op: "MoveItem", body: ewsMoveItemBody(id, *e.moveTo)}
	default: // mark_seen
		sc = soapCall{op: "UpdateItem", body: ewsMarkReadBody(id, "")}
	}
	_, _, err := e.do(ctx, sc)
	if IsEWSCode(err, EWSErrorItemNotFound) {
		log.Info("ews item gone before after_fetch, nothing to do", "op", sc.op)
		return nil
	}
	if err != nil {
		return fmt.Errorf("ews %s: after_fetch %s: %w", e.srv.Name, e.srv.AfterFetch, err)
	}
	return nil
}

// Test implements Fetcher: it reads folder counts and the oldest message
// (GetItem does not change IsRead) and changes nothing.
func (e *EWS) Test(ctx context.Context) (*TestReport, error) {
	rep := &TestReport{
		Server:     e.srv.Name,
		Protocol:   string(config.ProtocolEWS),
		Endpoint:   e.url,
		AuthMethod: e.authMethod(),
		Folder:     e.folderName(),
		Unseen:     -1,
		Pending:    -1,
	}
	folder, err := e.source(ctx)
	if err != nil {
		return nil, err
	}
	msg, env, err := e.do(ctx, soapCall{op: "GetFolder", body: ewsGetFolderBody(folder)})
	if err != nil {
		return nil, err
	}
	if env.Header.Version != nil {
		rep.Capabilities = append(rep.Capabilities, "ServerVersion "+env.Header.Version.String())
	}
	rep.Capabilities = append(rep.Capabilities, "RequestServerVersion "+e.env.version)
	if e.srv.Impersonate != "" {
		rep.Capabilities = append(rep.Capabilities, "ExchangeImpersonation "+e.srv.Impersonate)
	}
	if len(msg.Folders) > 0 {
		rep.Messages = msg.Folders[0].TotalCount
		rep.Unseen = msg.Folders[0].UnreadCount
	}
	if e.deps.Checkpoints != nil {
		cp, err := e.deps.Checkpoints.Get(ctx, e.srv.Name, e.folderName())
		if err != nil {
			return nil, err
		}
		if cp.SyncState == "" {
			rep.Pending = rep.Messages
		}
	}
	msg, _, err = e.do(ctx, soapCall{op: "FindItem", body: ewsFindOldestBody(folder)})
	if err != nil {
		return nil, err
	}
	if len(msg.RootFolder.Items) == 0 {
		return rep, nil
	}
	id := msg.RootFolder.Items[0].ItemID.ID
	sp := spool.New(e.deps.SpoolDir, 0)
	if _, err := e.getMIME(ctx, id, sp); err != nil {
		sp.Close()
		return nil, err
	}
	b, err := io.ReadAll(sp.Open())
	sp.Close()
	if err != nil {
		return nil, fmt.Errorf("ews %s: read sample: %w", e.srv.Name, err)
	}
	rep.Sample = bytes.NewReader(b)
	rep.SampleRef = "ews:" + id
	return rep, nil
}

// Close implements Fetcher.
func (e *EWS) Close() error {
	e.rt.CloseIdleConnections()
	return nil
}

// offeredSchemes lists the authentication schemes of a 401's
// WWW-Authenticate headers (scheme names only, never challenge data).
func offeredSchemes(h http.Header) string {
	var out []string
	for _, v := range h.Values("WWW-Authenticate") {
		scheme, _, _ := strings.Cut(strings.TrimSpace(v), " ")
		if scheme != "" {
			out = append(out, scheme)
		}
	}
	if len(out) == 0 {
		return "no scheme"
	}
	return strings.Join(out, ", ")
}

// shortID abbreviates a long EWS or Graph id for logs and errors.
func shortID(id string) string {
	if len(id) > 24 {
		return id[:8] + "…" + id[len(id)-12:]
	}
	return id
}
