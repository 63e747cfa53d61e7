package publisher

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailworker/mailworker/config"
	"github.com/mailworker/mailworker/parser"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startEmbedded starts an embedded server in a temp dir and connects in
// process; both are closed at cleanup.
func startEmbedded(t *testing.T) (*Embedded, *nats.Conn) {
	t.Helper()
	e, err := StartEmbedded(t.TempDir(), testLogger(t))
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := Connect(context.Background(), config.NATS{}, e, testLogger(t))
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	return e, nc
}

func TestPublishDedupe(t *testing.T) {
	_, nc := startEmbedded(t)
	ctx := context.Background()
	p, err := New(ctx, nc, config.NATS{}, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer p.Close()
	ev := &Event{Schema: SchemaV1, ID: EventID("s1", "help@example.com", "abc"), Kind: KindNewRequest, Server: "s1",
		Message: &parser.Message{Subject: "hello"}}
	subj := p.Subject("s1", SubjectRequest)
	if subj != "mail.s1.request" {
		t.Fatalf("Subject = %q, want mail.s1.request", subj)
	}
	a1, err := p.Publish(ctx, subj, ev)
	if err != nil {
		t.Fatalf("Publish 1: %v", err)
	}
	a2, err := p.Publish(ctx, subj, ev)
	if err != nil {
		t.Fatalf("Publish 2: %v", err)
	}
	if a1.Duplicate || !a2.Duplicate {
		t.Fatalf("Duplicate flags = %v, %v; want false, true", a1.Duplicate, a2.Duplicate)
	}
	if a2.Sequence != a1.Sequence {
		t.Fatalf("duplicate ack sequence %d, want original %d", a2.Sequence, a1.Sequence)
	}
	n, err := Pending(ctx, p.JetStream(), p.Stream(), "")
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("stream holds %d messages, want 1", n)
	}
	if _, err := p.Publish(ctx, subj, &Event{}); err == nil {
		t.Fatalf("Publish without id succeeded")
	}
}

func TestStreamCreateThenUpdate(t *testing.T) {
	_, nc := startEmbedded(t)
	ctx := context.Background()
	cfg := config.NATS{Stream: "MW", SubjectPrefix: "mw"}
	p, err := New(ctx, nc, cfg, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	p.Close()
	s, err := p.JetStream().Stream(ctx, "MW")
	if err != nil {
		t.Fatal(err)
	}
	info, _ := s.Info(ctx)
	if info.Config.Duplicates != DefaultDuplicateWindow || info.Config.Subjects[0] != "mw.>" || info.Config.Storage != jetstream.FileStorage {
		t.Fatalf("stream config = dup %v subjects %v storage %v", info.Config.Duplicates, info.Config.Subjects, info.Config.Storage)
	}
	cfg.DuplicateWindow = config.Duration(3 * time.Minute)
	p2, err := New(ctx, nc, cfg, testLogger(t))
	if err != nil {
		t.Fatalf("New (update): %v", err)
	}
	p2.Close()
	info, err = s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Duplicates != 3*time.Minute {
		t.Fatalf("after update Duplicates = %v, want 3m", info.Config.Duplicates)
	}
}

func TestNATSDownFailsFastAndRecovers(t *testing.T) {
	dir := t.TempDir()
	logger := testLogger(t)
	e, err := StartEmbedded(dir, logger, WithListen("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	url := e.URL()
	if got, err := ReadURLFile(dir); err != nil || got != url {
		t.Fatalf("ReadURLFile = %q, %v; want %q", got, err, url)
	}
	ctx := context.Background()
	nc, err := Connect(ctx, config.NATS{URL: url}, nil, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	p, err := New(ctx, nc, config.NATS{}, logger, WithAckTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	subj := p.Subject("s", SubjectRequest)
	if _, err := p.Publish(ctx, subj, &Event{ID: "one"}); err != nil {
		t.Fatal(err)
	}

	e.Shutdown()
	waitFor(t, func() bool { return !p.Healthy() })
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = p.Publish(wctx, subj, &Event{ID: "two"})
	if !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Publish while down = %v, want ErrNotConnected", err)
	}
	if wctx.Err() != nil {
		t.Fatalf("Publish while down waited for the whole context")
	}
	short, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if err := p.WaitConnected(short); err == nil {
		t.Fatalf("WaitConnected while down = nil")
	}

	// Same store and port: the stream and its first message survive.
	host := strings.TrimPrefix(url, "nats://")
	e2, err := StartEmbedded(dir, logger, WithListen(host))
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Shutdown()
	rctx, cancel3 := context.WithTimeout(ctx, 30*time.Second)
	defer cancel3()
	if err := p.WaitConnected(rctx); err != nil {
		t.Fatal(err)
	}
	ack, err := p.Publish(rctx, subj, &Event{ID: "two"})
	if err != nil {
		t.Fatalf("Publish after restart: %v", err)
	}
	if ack.Duplicate || ack.Sequence != 2 {
		t.Fatalf("after restart ack = %+v, want seq 2, not duplicate", ack)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within 20s")
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not a wait for an event
	}
}

func TestObjectsDedupe(t *testing.T) {
	_, nc := startEmbedded(t)
	ctx := context.Background()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	o, err := NewObjects(ctx, js, "attachments", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("attachment bytes ", 1000)
	sink := o.Sink(ctx)
	k1, err := sink.Put(parser.Attachment{Filename: "a.txt", ContentType: "text/plain"}, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	k2, err := sink.Put(parser.Attachment{Filename: "b.txt"}, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if k1 != k2 || len(k1) != 64 {
		t.Fatalf("keys %q, %q; want the same sha256", k1, k2)
	}
	r, err := o.Get(ctx, k1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil || string(got) != body {
		t.Fatalf("Get = %d bytes, %v; want %d bytes", len(got), err, len(body))
	}
	store, _ := js.ObjectStore(ctx, "attachments")
	list, err := store.List(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("bucket holds %d objects (%v), want 1", len(list), err)
	}
}

func TestFollow(t *testing.T) {
	_, nc := startEmbedded(t)
	ctx := context.Background()
	p, err := New(ctx, nc, config.NATS{}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i, tok := range []string{SubjectRequest, SubjectReply, SubjectRequest} {
		if _, err := p.Publish(ctx, p.Subject("s", tok), &Event{ID: string(rune('a' + i)), Kind: KindNewRequest}); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	err = Follow(fctx, p.JetStream(), p.Stream(), "mail.s.request", true, func(ev *Event, m jetstream.Msg) error {
		ids = append(ids, ev.ID)
		if len(ids) == 2 {
			return ErrStop
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(ids, ",") != "a,c" {
		t.Fatalf("followed %v, want [a c]", ids)
	}
	if n, _ := Pending(ctx, p.JetStream(), p.Stream(), "mail.s.request"); n != 2 {
		t.Fatalf("Pending = %d, want 2", n)
	}
}

func TestRedactURLs(t *testing.T) {
	got := redactURLs("nats://user:pw@a:4222, nats://b:4222")
	if strings.Contains(got, "pw") || !strings.Contains(got, "b:4222") {
		t.Fatalf("redactURLs = %q", got)
	}
}

// TestWaitFailsWhenConnectionDrops: an ack that will never come (a plain
// subscriber swallows the message) fails with ErrNotConnected as soon as
// the connection drops, long before the ack timeout.
func TestWaitFailsWhenConnectionDrops(t *testing.T) {
	e, nc := startEmbedded(t)
	ctx := context.Background()
	p, err := New(ctx, nc, config.NATS{}, testLogger(t), WithAckTimeout(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	sub, err := nc.SubscribeSync("blackhole.>")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	f, err := p.PublishAsync(ctx, "blackhole.x", &Event{ID: "lost"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("subscriber got nothing: %v", err)
	}
	if _, _, done := f.Poll(); done {
		t.Fatalf("future done before any ack")
	}
	go e.Shutdown()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := f.Wait(wctx); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Wait = %v, want ErrNotConnected", err)
	}
	if _, err, done := f.Poll(); !done || !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Poll after Wait = %v, %v", err, done)
	}
}

// TestEncodeAndMaxPayload: events are JSON without HTML escaping, and an
// event over the connection's max payload is refused with a
// *TooLargeError before anything is published.
func TestEncodeAndMaxPayload(t *testing.T) {
	ev := &Event{Schema: SchemaV1, ID: "x1", Kind: KindNewRequest, Message: &parser.Message{HTML: "<p>a & b</p>"}}
	b, err := Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(`\u003c`)) || bytes.Contains(b, []byte(`\u0026`)) || !bytes.Contains(b, []byte(`"html":"<p>a & b</p>"`)) || bytes.HasSuffix(b, []byte("\n")) {
		t.Fatalf("Encode = %s", b)
	}

	ctx := context.Background()
	emb, err := StartEmbedded(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Shutdown()
	nc, err := Connect(ctx, config.NATS{}, emb, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(ctx, nc, config.NATS{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	max := p.MaxPayload()
	if max <= 0 || max >= nc.MaxPayload() {
		t.Fatalf("MaxPayload = %d, connection's %d", max, nc.MaxPayload())
	}
	ev.Message.Text = strings.Repeat("x", int(max))
	_, err = p.PublishAsync(ctx, p.Subject("s1", SubjectRequest), ev)
	var tl *TooLargeError
	if !errors.As(err, &tl) || !errors.Is(err, ErrTooLarge) || tl.Max != max || tl.Size <= max {
		t.Fatalf("PublishAsync of an oversized event = %v", err)
	}
	if n, err := Pending(ctx, p.JetStream(), p.Stream(), ""); err != nil || n != 0 {
		t.Fatalf("stream holds %d (%v) after a refused publish", n, err)
	}
	ev.Message.Text = "small"
	if _, err := p.Publish(ctx, p.Subject("s1", SubjectRequest), ev); err != nil {
		t.Fatal(err)
	}
}
