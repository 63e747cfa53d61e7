package publisher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailworker/mailworker/parser"
	"github.com/mailworker/mailworker/spool"
)

// Objects stores attachment bodies in a JetStream Object Store bucket,
// keyed by the hex SHA-256 of the decoded bytes: the same attachment sent
// twice is stored once. It is safe for concurrent use.
type Objects struct {
	store  jetstream.ObjectStore
	bucket string
	tmpDir string
}

// NewObjects creates (or opens) the bucket. tmpDir is where bodies larger
// than spool.DefaultMemLimit are spooled while hashed ("" = os.TempDir).
func NewObjects(ctx context.Context, js jetstream.JetStream, bucket, tmpDir string) (*Objects, error) {
	store, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      bucket,
		Description: "mailworker attachments, keyed by sha256",
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", bucket, err)
	}
	return &Objects{store: store, bucket: bucket, tmpDir: tmpDir}, nil
}

// Put reads body to EOF, and stores it under its SHA-256 unless an object
// of that name exists already. It returns the key (the hex SHA-256).
func (o *Objects) Put(ctx context.Context, meta parser.Attachment, body io.Reader) (string, error) {
	h := sha256.New()
	sp, err := spool.ReadFrom(io.TeeReader(body, h), o.tmpDir, 0)
	if err != nil {
		return "", fmt.Errorf("object store %s: read attachment: %w", o.bucket, err)
	}
	defer sp.Close()
	key := hex.EncodeToString(h.Sum(nil))
	if _, err := o.store.GetInfo(ctx, key); err == nil {
		return key, nil
	} else if !errors.Is(err, jetstream.ErrObjectNotFound) {
		return "", fmt.Errorf("object store %s: look up %s: %w", o.bucket, key, err)
	}
	om := jetstream.ObjectMeta{Name: key, Description: meta.Filename}
	if meta.ContentType != "" {
		om.Headers = map[string][]string{"Content-Type": {meta.ContentType}}
	}
	if _, err := o.store.Put(ctx, om, sp.Open()); err != nil {
		return "", fmt.Errorf("object store %s: put %s: %w", o.bucket, key, err)
	}
	return key, nil
}

// Get opens the object stored under key. The caller closes the result.
func (o *Objects) Get(ctx context.Context, key string) (jetstream.ObjectResult, error) {
	r, err := o.store.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("object store %s: get %s: %w", o.bucket, key, err)
	}
	return r, nil
}

// Sink adapts o to parser.Sink for one Parse call, using ctx for the store
// requests.
func (o *Objects) Sink(ctx context.Context) parser.Sink { return objectSink{ctx: ctx, o: o} }

type objectSink struct {
	ctx context.Context
	o   *Objects
}

func (s objectSink) Put(meta parser.Attachment, body io.Reader) (string, error) {
	return s.o.Put(s.ctx, meta, body)
}
