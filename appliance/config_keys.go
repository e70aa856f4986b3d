package appliance

import (
	"encoding"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/BurntSushi/toml"
)

// A misspelt key silently ignored is a setting silently not applied, so
// every key the appliance does not know is reported, each with the known
// key it most likely meant.

// unknownKeyErrors names every key md did not decode, dropping a table when
// its keys are listed too ("x" beside "x.y").
func unknownKeyErrors(md toml.MetaData) []error {
	var keys []string
	for _, k := range md.Undecoded() {
		keys = append(keys, k.String())
	}
	var errs []error
	for _, k := range keys {
		if slices.ContainsFunc(keys, func(o string) bool { return strings.HasPrefix(o, k+".") }) {
			continue
		}
		if guess := closestKey(k); guess != "" {
			errs = append(errs, fmt.Errorf("%s: unknown key (did you mean %s?)", k, guess))
			continue
		}
		errs = append(errs, fmt.Errorf("%s: unknown key", k))
	}
	return errs
}

// closestKey returns the known key nearest to key, if one is near enough
// to be a typo: a few edits, fewer for short keys.
func closestKey(key string) string {
	best, bestDist := "", max(1, min(3, len(key)/4))+1
	for _, known := range knownKeys() {
		if d := editDistance(key, known); d < bestDist {
			best, bestDist = known, d
		}
	}
	return best
}

// knownKeys lists every key of Config as dotted TOML paths; tables of
// tables (rpc.keys) contribute their members' keys under the table's name.
var knownKeys = sync.OnceValue(func() []string {
	var keys []string
	// inside holds the types on the current path: a type that contains
	// itself (a menu button's sub-buttons) is listed once, not forever.
	inside := map[reflect.Type]bool{}
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || reflect.PointerTo(t).Implements(textUnmarshaler) || inside[t] {
			return
		}
		inside[t] = true
		defer delete(inside, t)
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
			if name == "" || name == "-" {
				continue
			}
			keys = append(keys, prefix+name)
			walk(prefix+name+".", t.Field(i).Type)
		}
	}
	walk("", reflect.TypeFor[Config]())
	return keys
})

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
