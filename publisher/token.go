package publisher

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/mailworker/mailworker/config"
)

// EmbeddedToken returns the token clients of the embedded server must
// present, from nats.token_env or nats.token_file, or "" when neither is
// set. When create is true and token_file does not exist, it is created
// (mode 0600, its directory 0700) with a random token, and that is logged.
func EmbeddedToken(cfg config.NATS, getenv func(string) string, create bool, logger *slog.Logger) (string, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	switch {
	case cfg.TokenEnv != "":
		tok := strings.TrimSpace(getenv(cfg.TokenEnv))
		if tok == "" {
			return "", fmt.Errorf("nats.token_env: $%s is empty or not set", cfg.TokenEnv)
		}
		return tok, nil
	case cfg.TokenFile != "":
		b, err := os.ReadFile(cfg.TokenFile)
		if errors.Is(err, fs.ErrNotExist) && create {
			return createTokenFile(cfg.TokenFile, logger)
		}
		if err != nil {
			return "", fmt.Errorf("nats.token_file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("nats.token_file: %s is empty", cfg.TokenFile)
		}
		return tok, nil
	}
	return "", nil
}

func createTokenFile(path string, logger *slog.Logger) (string, error) {
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("nats.token_file: generate token: %w", err)
	}
	tok := hex.EncodeToString(buf)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("nats.token_file: %w", err)
	}
	// O_EXCL: never overwrite a token another process just wrote.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return EmbeddedToken(config.NATS{TokenFile: path}, nil, false, logger)
	}
	if err != nil {
		return "", fmt.Errorf("nats.token_file: %w", err)
	}
	if _, err := f.WriteString(tok + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("nats.token_file: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("nats.token_file: %w", err)
	}
	if logger != nil {
		logger.Info("embedded nats: created a client token; give it to the helpdesk's NATS client", "token_file", path)
	}
	return tok, nil
}
