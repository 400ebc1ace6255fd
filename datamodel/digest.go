package datamodel

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// Digest identifies the model's migrations: their versions and checksums, in
// order, as 16 hex digits. Two models with the same digest create the same
// tables.
func (m *Model) Digest() string {
	h := sha256.New()
	for _, mig := range m.migrations {
		fmt.Fprintf(h, "%d:%s\n", mig.Version, mig.Checksum)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}
