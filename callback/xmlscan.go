package callback

import (
	"bytes"
	"strings"
	"unicode/utf8"
)

// scanFields is parseFields for the XML WeChat actually sends: elements
// without attributes holding text or CDATA, with nothing to unescape. It
// walks the body once, slicing names and text out of it, where
// encoding/xml builds a token and copies each piece (half the CPU of a
// message in BenchmarkTextMessageSafeMode went there).
//
// It reports ok only for input it fully understands, and then its result
// is exactly what decodeFields would return (FuzzScanFields checks this).
// Anything else (an attribute, an entity, a comment, a '\r' that
// encoding/xml would rewrite, a character it would refuse, a name with a
// namespace, malformed markup) makes it give up, and parseFields decodes
// the body with encoding/xml, errors included.
func scanFields(data []byte) (map[string]any, bool) {
	var (
		stack [maxDepth]scanFrame
		depth int
		root  map[string]any
	)
	for pos := 0; pos < len(data); {
		lt := bytes.IndexByte(data[pos:], '<')
		text := data[pos:]
		if lt >= 0 {
			text = text[:lt]
		}
		switch {
		case len(text) == 0:
		case depth == 0:
			if !blankOutside(text) {
				return nil, false
			}
		case !plainText(text):
			return nil, false
		default:
			stack[depth-1].add(text)
		}
		if lt < 0 {
			break
		}
		pos += lt
		rest := data[pos:]
		switch {
		case bytes.HasPrefix(rest, cdataOpen):
			end := bytes.Index(rest[len(cdataOpen):], cdataClose)
			if depth == 0 || end < 0 {
				return nil, false
			}
			content := rest[len(cdataOpen) : len(cdataOpen)+end]
			if !validChars(content) {
				return nil, false
			}
			stack[depth-1].add(content)
			pos += len(cdataOpen) + end + len(cdataClose)
		case len(rest) > 1 && rest[1] == '/':
			n := plainNameLen(rest[2:])
			if n == 0 || 2+n >= len(rest) || rest[2+n] != '>' || depth == 0 || !bytes.Equal(stack[depth-1].name, rest[2:2+n]) {
				return nil, false
			}
			pos += 3 + n
			depth--
			root = stack[depth].close(stack[:depth], root)
		default:
			n := plainNameLen(rest[1:])
			i := 1 + n
			empty := i < len(rest) && rest[i] == '/'
			if empty {
				i++
			}
			if n == 0 || i >= len(rest) || rest[i] != '>' || root != nil || depth >= maxDepth ||
				(depth == 0 && string(rest[1:1+n]) != "xml") {
				return nil, false
			}
			if depth > 0 {
				stack[depth-1].children = true
			}
			stack[depth] = scanFrame{name: rest[1 : 1+n]}
			depth++
			pos += i + 1
			if empty {
				depth--
				root = stack[depth].close(stack[:depth], root)
			}
		}
	}
	if root == nil || depth != 0 {
		return nil, false
	}
	return root, true
}

// scanFrame is an open element: what decodeFields's frame holds, with the
// text kept as a slice of the body while it is one piece.
type scanFrame struct {
	name     []byte
	fields   map[string]any
	one      []byte // the text while it is one piece
	more     []byte // the text once it is several
	pieces   int
	children bool
}

func (f *scanFrame) add(text []byte) {
	switch f.pieces {
	case 0:
		f.one = text
	case 1:
		f.more = append(append(make([]byte, 0, len(f.one)+len(text)), f.one...), text...)
	default:
		f.more = append(f.more, text...)
	}
	f.pieces++
}

func (f *scanFrame) text() string {
	if f.pieces > 1 {
		return string(f.more)
	}
	return string(f.one)
}

// close ends f, whose parents are stack, adding its value to the innermost
// parent, and returns the root: root as it was, or f's value when f is
// the root element. The same steps as decodeFields's EndElement.
func (f *scanFrame) close(stack []scanFrame, root map[string]any) map[string]any {
	var value any
	if f.children || f.fields != nil {
		fields := f.fields
		if fields == nil {
			fields = map[string]any{}
		}
		if s := f.text(); strings.TrimSpace(s) != "" {
			fields["#text"] = s
		}
		value = fields
	} else {
		value = f.text()
	}
	if len(stack) == 0 {
		r, _ := value.(map[string]any)
		if r == nil { // <xml>text</xml> or <xml/>
			r = map[string]any{}
			if s, _ := value.(string); strings.TrimSpace(s) != "" {
				r["#text"] = s
			}
		}
		return r
	}
	parent := &stack[len(stack)-1]
	if parent.fields == nil {
		parent.fields = map[string]any{}
	}
	addField(parent.fields, string(f.name), value)
	return root
}

// plainNameLen is the length of the name at the start of b when it is one
// of the plain names WeChat uses, [A-Za-z_][A-Za-z0-9_.-]*, and 0 when
// the name is anything else (or absent).
func plainNameLen(b []byte) int {
	for i, c := range b {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', c == '_':
		case i > 0 && ('0' <= c && c <= '9' || c == '.' || c == '-'):
		case c == ':':
			return 0 // a namespace: encoding/xml's business
		default:
			return i
		}
	}
	return len(b)
}

// blankOutside reports whether text outside the root is only the blanks
// that need no rewriting.
func blankOutside(text []byte) bool {
	for _, c := range text {
		if c != ' ' && c != '\t' && c != '\n' {
			return false
		}
	}
	return true
}

// plainText reports whether text between markup is what encoding/xml
// passes through unchanged: no entity, no "]]>", valid characters.
func plainText(text []byte) bool {
	return bytes.IndexByte(text, '&') < 0 && !bytes.Contains(text, cdataClose) && validChars(text)
}

// validChars reports whether text is UTF-8 whose every character
// encoding/xml accepts, without '\r', which it would rewrite.
func validChars(text []byte) bool {
	for i := 0; i < len(text); {
		c := text[i]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\t' && c != '\n' {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(text[i:])
		if r == utf8.RuneError && size == 1 || r == 0xFFFE || r == 0xFFFF {
			return false
		}
		i += size
	}
	return true
}
