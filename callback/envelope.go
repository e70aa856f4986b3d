package callback

import (
	"bytes"
	"fmt"
)

// envelope is what an encrypted push's outer body holds that matters: the
// Encrypt value, the only part msg_signature covers.
type envelope struct {
	// hasEncrypt is set when there is an Encrypt element; encrypt is its
	// value with blanks around it trimmed.
	hasEncrypt bool
	encrypt    string
	// compatible is set when a MsgType sits beside Encrypt: compatible
	// mode's plaintext copy, which is never used, only logged as a mode.
	compatible bool
}

// scanEnvelope finds the Encrypt value of a push without parsing the XML,
// so that msg_signature can be checked before anything costly is done with
// an anonymous body. It walks the markup once, jumping
// from one '<' to the next: every byte is looked at a bounded number of
// times and nothing is allocated, whatever the body.
//
// It is strict where leniency would be ambiguous: the root must be <xml>,
// tags must balance, CDATA sections, comments and processing instructions
// are skipped whole (so an Encrypt inside a user's text is text), and
// there must be exactly one Encrypt element, directly under the root,
// holding one CDATA section or plain text and nothing else. What else the
// envelope holds is not looked at: in compatible mode the plaintext copy
// is not covered by the signature and is never used.
func scanEnvelope(body []byte) (envelope, error) {
	var (
		env       envelope
		stack     [maxDepth][]byte // open elements' names, slices of body
		depth     int
		rootDone  bool
		inEncrypt bool
		enc       encryptValue
	)
	pos := 0
	for pos <= len(body) {
		next := bytes.IndexByte(body[pos:], '<')
		text := body[pos:]
		if next >= 0 {
			text = body[pos : pos+next]
		}
		switch {
		case depth == 0:
			if !isBlank(text) {
				return env, fmt.Errorf("%w: text outside <xml>", ErrMalformed)
			}
		case inEncrypt:
			if err := enc.addText(text); err != nil {
				return env, err
			}
		}
		if next < 0 {
			break
		}
		pos += next
		rest := body[pos:]
		var n int
		var err error
		// One byte tells the kind of markup, so an ordinary tag costs no
		// prefix comparisons.
		var kind byte
		if len(rest) > 1 {
			kind = rest[1]
		}
		switch {
		case kind == '!' && bytes.HasPrefix(rest, cdataOpen):
			var data []byte
			data, n, err = skipTo(rest, cdataOpen, cdataClose, "CDATA section")
			if err == nil && depth == 0 {
				err = fmt.Errorf("%w: text outside <xml>", ErrMalformed)
			}
			if err == nil && inEncrypt {
				err = enc.addCDATA(data)
			}
		case kind == '!' && bytes.HasPrefix(rest, commentOpen):
			_, n, err = skipTo(rest, commentOpen, commentClose, "comment")
			if err == nil && inEncrypt {
				err = fmt.Errorf("%w: Encrypt holds a comment", ErrMalformed)
			}
		case kind == '!':
			// A DOCTYPE could declare entities; WeChat never sends one.
			err = fmt.Errorf("%w: directives are not accepted", ErrMalformed)
		case kind == '?':
			_, n, err = skipTo(rest, piOpen, piClose, "processing instruction")
			if err == nil && inEncrypt {
				err = fmt.Errorf("%w: Encrypt holds a processing instruction", ErrMalformed)
			}
		case kind == '/':
			var name []byte
			name, n, err = endTag(rest)
			if err != nil {
				break
			}
			if depth == 0 || !bytes.Equal(stack[depth-1], name) {
				err = fmt.Errorf("%w: unexpected </%s>", ErrMalformed, clip(name))
				break
			}
			if inEncrypt {
				if env.encrypt, err = enc.value(); err != nil {
					break
				}
				inEncrypt = false
			}
			depth--
			rootDone = depth == 0
		default:
			var name []byte
			var empty bool
			name, empty, n, err = startTag(rest)
			if err != nil {
				break
			}
			switch {
			case rootDone:
				err = fmt.Errorf("%w: content after </xml>", ErrMalformed)
			case depth == 0 && string(name) != "xml":
				err = fmt.Errorf("%w: root element is <%s>, want <xml>", ErrMalformed, clip(name))
			case depth >= maxDepth:
				err = fmt.Errorf("%w: nested deeper than %d", ErrMalformed, maxDepth)
			case inEncrypt:
				err = fmt.Errorf("%w: Encrypt holds an element", ErrMalformed)
			}
			if err != nil {
				break
			}
			switch local := localName(name); {
			case string(local) == "Encrypt" && depth != 1:
				err = fmt.Errorf("%w: Encrypt is not directly under <xml>", ErrMalformed)
			case string(local) == "Encrypt" && env.hasEncrypt:
				err = fmt.Errorf("%w: more than one Encrypt element", ErrMalformed)
			case string(local) == "Encrypt":
				env.hasEncrypt, inEncrypt, enc = true, !empty, encryptValue{}
			case string(local) == "MsgType" && depth == 1:
				env.compatible = true
			}
			if err != nil || empty {
				rootDone = rootDone || depth == 0
				break
			}
			stack[depth] = name
			depth++
		}
		if err != nil {
			return env, err
		}
		pos += n
	}
	switch {
	case !rootDone && depth == 0:
		return env, fmt.Errorf("%w: no <xml> element", ErrMalformed)
	case !rootDone:
		return env, fmt.Errorf("%w: <%s> is not closed", ErrMalformed, clip(stack[depth-1]))
	}
	return env, nil
}

var (
	cdataOpen    = []byte("<![CDATA[")
	cdataClose   = []byte("]]>")
	commentOpen  = []byte("<!--")
	commentClose = []byte("-->")
	piOpen       = []byte("<?")
	piClose      = []byte("?>")
)

// encryptValue collects what sits between <Encrypt> and </Encrypt>: one
// CDATA section, or text, with blank text around the section allowed.
type encryptValue struct {
	cdata    []byte
	sections int
	text     []byte
	pieces   int // text between the start, any sections and the end
}

func (v *encryptValue) addText(text []byte) error {
	if isBlank(text) {
		return nil
	}
	// Base64 never needs an entity; decoding them here would make the
	// signed value differ from the bytes sent.
	if bytes.IndexByte(text, '&') >= 0 {
		return fmt.Errorf("%w: Encrypt holds an entity", ErrMalformed)
	}
	v.text = text
	v.pieces++
	return nil
}

func (v *encryptValue) addCDATA(data []byte) error {
	v.cdata = data
	v.sections++
	return nil
}

func (v *encryptValue) value() (string, error) {
	switch {
	case v.sections == 0 && v.pieces <= 1:
		return string(bytes.TrimSpace(v.text)), nil
	case v.sections == 1 && v.pieces == 0:
		return string(bytes.TrimSpace(v.cdata)), nil
	}
	return "", fmt.Errorf("%w: Encrypt is not a single value", ErrMalformed)
}

// skipTo returns what lies between open, at the start of rest, and the
// first close after it, and how many bytes that took with both markers.
func skipTo(rest, open, close []byte, what string) ([]byte, int, error) {
	end := bytes.Index(rest[len(open):], close)
	if end < 0 {
		return nil, 0, fmt.Errorf("%w: unterminated %s", ErrMalformed, what)
	}
	return rest[len(open) : len(open)+end], len(open) + end + len(close), nil
}

// startTag reads "<name attrs...>" or "<name .../>" at the start of rest:
// the name, whether the element is empty, and the tag's length. Attribute
// values are skipped whole, so a '>' inside quotes does not end the tag.
func startTag(rest []byte) (name []byte, empty bool, n int, err error) {
	name = tagName(rest[1:])
	if len(name) == 0 {
		return nil, false, 0, fmt.Errorf("%w: '<' not followed by a name", ErrMalformed)
	}
	for i := 1 + len(name); i < len(rest); i++ {
		switch c := rest[i]; c {
		case '>':
			return name, rest[i-1] == '/', i + 1, nil
		case '"', '\'':
			end := bytes.IndexByte(rest[i+1:], c)
			if end < 0 {
				return nil, false, 0, fmt.Errorf("%w: unterminated attribute value", ErrMalformed)
			}
			i += 1 + end
		case '<':
			return nil, false, 0, fmt.Errorf("%w: '<' inside a tag", ErrMalformed)
		}
	}
	return nil, false, 0, fmt.Errorf("%w: unterminated tag <%s", ErrMalformed, clip(name))
}

// endTag reads "</name>", with blanks allowed before the '>'.
func endTag(rest []byte) (name []byte, n int, err error) {
	name = tagName(rest[2:])
	i := 2 + len(name)
	for i < len(rest) && isSpace(rest[i]) {
		i++
	}
	if len(name) == 0 || i >= len(rest) || rest[i] != '>' {
		return nil, 0, fmt.Errorf("%w: malformed end tag", ErrMalformed)
	}
	return name, i + 1, nil
}

// tagName returns the name at the start of b: everything up to a blank,
// '/', '>' or a byte that cannot be in a name.
func tagName(b []byte) []byte {
	for i, c := range b {
		if isSpace(c) || c == '/' || c == '>' || c == '<' || c == '=' || c == '"' || c == '\'' || c == '&' {
			return b[:i]
		}
	}
	return b
}

// localName drops a namespace prefix, as encoding/xml's Name.Local does.
func localName(name []byte) []byte {
	if i := bytes.LastIndexByte(name, ':'); i >= 0 {
		return name[i+1:]
	}
	return name
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func isBlank(b []byte) bool {
	for _, c := range b {
		if !isSpace(c) {
			return false
		}
	}
	return true
}

// clip keeps a hostile name from making a huge error message.
func clip(name []byte) string {
	const max = 32
	if len(name) > max {
		return string(name[:max]) + "..."
	}
	return string(name)
}
