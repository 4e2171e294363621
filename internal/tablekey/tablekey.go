// Package tablekey is a client's key in HAProxy's stick tables, as the
// generated configuration computes it: `sha1,bytes(0,16),hex` of the client
// key (its MQTT client id, or certificate CN).
//
// A fixed size fits any MQTT id (up to 65535 bytes) with no truncation.
// sha1 is built into every HAProxy from 2.4 on, with or without OpenSSL
// (sha2 needs an OpenSSL build). What would let a client steer another's
// entry is a second preimage of a chosen id, for which SHA-1 truncated to
// 128 bits still costs about 2^128; the known SHA-1 attacks find
// collisions between two inputs the attacker both chooses, which only
// share an entry between the attacker's own ids.
package tablekey

import (
	"crypto/sha1"
	"encoding/hex"
	"strings"
)

// Scheme names the key function, for anything that must change with it.
const Scheme = "sha1,bytes(0,16),hex"

// Size is the key's length in bytes.
const Size = 16

// Key is a table key as bytes.
type Key [Size]byte

// Of computes the table key of a client key.
func Of(clientKey []byte) Key {
	sum := sha1.Sum(clientKey)
	var k Key
	copy(k[:], sum[:Size])
	return k
}

// String is the key as the table stores it and the Runtime API shows it:
// upper-case hex, 32 characters.
func (k Key) String() string { return strings.ToUpper(hex.EncodeToString(k[:])) }

// Parse reads a key as String writes it (either case).
func Parse(s string) (Key, bool) {
	var k Key
	if len(s) != 2*Size {
		return k, false
	}
	if _, err := hex.Decode(k[:], []byte(s)); err != nil {
		return k, false
	}
	return k, true
}
