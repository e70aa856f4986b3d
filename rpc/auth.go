package rpc

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"

	"github.com/100steps/wxappliance/appliance/wire"
)

// hashedKey is a configured key kept as its sha256, so every comparison
// is between equal lengths and subtle.ConstantTimeCompare never returns
// early on a length mismatch.
type hashedKey struct {
	name string
	sum  [sha256.Size]byte
}

func hashKeys(keys []Key) []hashedKey {
	out := make([]hashedKey, 0, len(keys))
	for _, k := range keys {
		if k.Key == "" {
			continue
		}
		out = append(out, hashedKey{name: k.Name, sum: sha256.Sum256([]byte(k.Key))})
	}
	return out
}

// authenticate returns the name of the key the handshake's
// "Authorization: Bearer <key>" carries. Every configured key is compared,
// in constant time and without stopping at a match, so the time taken
// tells neither whether nor which key matched.
func (s *Server) authenticate(r *http.Request) (string, bool) {
	given, ok := wire.BearerToken(r)
	if !ok {
		return "", false
	}
	sum := sha256.Sum256([]byte(given))
	match := -1
	for i, k := range s.keys {
		eq := subtle.ConstantTimeCompare(sum[:], k.sum[:])
		match = subtle.ConstantTimeSelect(eq, i, match)
	}
	if match < 0 {
		return "", false
	}
	return s.keys[match].name, true
}

// originAllowed accepts a handshake without Origin (a backend; browsers
// always send one) or with an Origin listed in cors.allowed_origins.
// Never every origin: a page elsewhere would otherwise open the socket
// from a visitor's browser.
func (s *Server) originAllowed(r *http.Request) bool {
	origins := r.Header.Values("Origin")
	if len(origins) == 0 {
		return true
	}
	return len(origins) == 1 && s.origins[origins[0]]
}
