package publisher

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailworker/mailworker/config"
)

func streamName(cfg config.NATS) string {
	if cfg.Stream != "" {
		return cfg.Stream
	}
	return DefaultStream
}

func subjectPrefix(cfg config.NATS) string {
	if cfg.SubjectPrefix != "" {
		return cfg.SubjectPrefix
	}
	return DefaultSubjectPrefix
}

// StreamConfig is the stream mailworker publishes to: subjects <prefix>.>,
// file storage, the configured duplicate window (default 10m) and replicas.
func StreamConfig(cfg config.NATS) jetstream.StreamConfig {
	dup := cfg.DuplicateWindow.D()
	if dup <= 0 {
		dup = DefaultDuplicateWindow
	}
	replicas := cfg.Replicas
	if replicas <= 0 {
		replicas = 1
	}
	return jetstream.StreamConfig{
		Name:        streamName(cfg),
		Description: "mailworker events",
		Subjects:    []string{subjectPrefix(cfg) + ".>"},
		Storage:     jetstream.FileStorage,
		Duplicates:  dup,
		Replicas:    replicas,
	}
}

// EnsureStream creates the stream, or updates an existing one to
// StreamConfig(cfg) (e.g. a changed duplicate window).
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg config.NATS) (jetstream.Stream, error) {
	sc := StreamConfig(cfg)
	s, err := js.CreateOrUpdateStream(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("jetstream stream %s (subjects %s): %w", sc.Name, sc.Subjects[0], err)
	}
	return s, nil
}
