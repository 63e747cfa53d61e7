package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// KeyEnv is the environment variable that holds the 32-byte at-rest key,
// hex or base64 encoded. It takes precedence over any key file.
const KeyEnv = "MAILWORKER_SECRET_KEY"

// DefaultKeyFile is the key file's name inside the data directory when the
// configuration names none.
const DefaultKeyFile = "secret.key"

// KeySize is the AES-256 key length in bytes.
const KeySize = 32

// ErrOpen is returned by Box.Open when the data cannot be decrypted: the key
// is not the one it was sealed with, or the data was altered or truncated.
var ErrOpen = errors.New("secret: cannot decrypt (wrong key or corrupted data)")

// Box encrypts small values at rest with AES-256-GCM. Every Seal uses a
// fresh random 96-bit nonce, which is prepended to the ciphertext. A Box is
// safe for concurrent use.
type Box struct {
	aead cipher.AEAD
}

// NewBox returns a Box for a 32-byte key.
func NewBox(key []byte) (*Box, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("secret: key is %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secret: aes: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secret: gcm: %w", err)
	}
	return &Box{aead: aead}, nil
}

// Seal encrypts plaintext. ad (associated data, may be nil) is authenticated
// but not stored: Open must be given the same ad. Binding a row's key (for
// example a server name) as ad stops a sealed value from being copied to
// another row.
func (b *Box) Seal(plaintext, ad []byte) ([]byte, error) {
	nonce := make([]byte, b.aead.NonceSize(), b.aead.NonceSize()+len(plaintext)+b.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("secret: nonce: %w", err)
	}
	return b.aead.Seal(nonce, nonce, plaintext, ad), nil
}

// Open decrypts what Seal returned, with the same ad. It returns ErrOpen
// when the key or ad differ or the data was altered.
func (b *Box) Open(sealed, ad []byte) ([]byte, error) {
	n := b.aead.NonceSize()
	if len(sealed) < n+b.aead.Overhead() {
		return nil, ErrOpen
	}
	pt, err := b.aead.Open(nil, sealed[:n], sealed[n:], ad)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// ParseKey decodes a 32-byte key written as hex (64 digits) or standard or
// URL-safe base64, with surrounding white space ignored.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) == 2*KeySize {
		if k, err := hex.DecodeString(s); err == nil {
			return k, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil && len(k) == KeySize {
			return k, nil
		}
	}
	// The value itself is never echoed: it is (close to) a key.
	return nil, fmt.Errorf("secret: key must be %d bytes as hex (%d digits) or base64", KeySize, 2*KeySize)
}

// LoadKey returns the Box for mailworker's at-rest key. The key comes from,
// in order:
//
//  1. the environment variable MAILWORKER_SECRET_KEY (read through getenv);
//  2. keyFile, when set (it must exist);
//  3. dataDir/secret.key, which is created with a new random key and mode
//     0600 when missing. A warning is logged when it is created: the key
//     must be backed up with the database, or stored tokens are lost.
//
// getenv nil means os.Getenv; logger nil discards. A key file readable by
// group or others is used but logged as a warning.
func LoadKey(dataDir, keyFile string, getenv func(string) string, logger *slog.Logger) (*Box, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if v := getenv(KeyEnv); v != "" {
		k, err := ParseKey(v)
		if err != nil {
			return nil, fmt.Errorf("secret: %s: %w", KeyEnv, err)
		}
		return NewBox(k)
	}
	explicit := keyFile != ""
	if !explicit {
		if dataDir == "" {
			dataDir = "."
		}
		keyFile = filepath.Join(dataDir, DefaultKeyFile)
	}
	data, err := os.ReadFile(keyFile)
	switch {
	case err == nil:
		if fi, serr := os.Stat(keyFile); serr == nil && fi.Mode().Perm()&0o077 != 0 {
			logger.Warn("secret key file is readable by other users; chmod 600 it", "path", keyFile, "mode", fi.Mode().Perm().String())
		}
		k, err := ParseKey(string(data))
		if err != nil {
			return nil, fmt.Errorf("secret: key file %s: %w", keyFile, err)
		}
		return NewBox(k)
	case errors.Is(err, fs.ErrNotExist) && !explicit:
		return createKey(keyFile, logger)
	default:
		return nil, fmt.Errorf("secret: read key file %s: %w", keyFile, err)
	}
}

// createKey writes a new random key to path (mode 0600, never overwriting an
// existing file) and warns once that it was generated.
func createKey(path string, logger *slog.Logger) (*Box, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("secret: create key directory: %w", err)
	}
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("secret: generate key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		// Another process created it between our read and now: use theirs.
		return LoadKey("", path, func(string) string { return "" }, logger)
	}
	if err != nil {
		return nil, fmt.Errorf("secret: create key file %s: %w", path, err)
	}
	if _, err := f.WriteString(hex.EncodeToString(k) + "\n"); err != nil {
		f.Close()
		return nil, fmt.Errorf("secret: write key file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("secret: write key file %s: %w", path, err)
	}
	logger.Warn("generated a new secret key for tokens at rest; back it up with the database, or set "+KeyEnv+" / secrets.key_file",
		"path", path)
	return NewBox(k)
}
