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
// an anonymous body. It walks the markup once, jumping from one '<' to the
// next: every byte is looked at a bounded number of times and nothing is
// allocated, whatever the body.
//
// It is strict where leniency would be ambiguous: the root must be <xml>,
// tags must balance, CDATA sections, comments and processing instructions
// are skipped whole (so an Encrypt inside a user's text is text), and
// there may be one Encrypt element at most, directly under the root,
// holding one CDATA section or plain text and nothing else. What else the
// envelope holds is not looked at: in compatible mode the plaintext copy
// is not covered by the signature and is never used.
func scanEnvelope(body []byte) (envelope, error) {
	var sc envelopeScanner
	for pos := 0; ; {
		next := bytes.IndexByte(body[pos:], '<')
		if next < 0 {
			if err := sc.text(body[pos:]); err != nil {
				return envelope{}, err
			}
			break
		}
		if err := sc.text(body[pos : pos+next]); err != nil {
			return envelope{}, err
		}
		pos += next
		n, err := sc.markup(body[pos:])
		if err != nil {
			return envelope{}, err
		}
		pos += n
	}
	switch {
	case !sc.rootDone && sc.depth == 0:
		return envelope{}, fmt.Errorf("%w: no <xml> element", ErrMalformed)
	case !sc.rootDone:
		return envelope{}, fmt.Errorf("%w: <%s> is not closed", ErrMalformed, clip(sc.stack[sc.depth-1]))
	}
	return sc.env, nil
}

// envelopeScanner is scanEnvelope's state between two pieces of markup.
type envelopeScanner struct {
	env       envelope
	stack     [maxDepth][]byte // open elements' names, slices of the body
	depth     int
	rootDone  bool
	inEncrypt bool
	enc       encryptValue
}

// text takes the text between two pieces of markup.
func (sc *envelopeScanner) text(t []byte) error {
	switch {
	case sc.depth == 0 && !isBlank(t):
		return fmt.Errorf("%w: text outside <xml>", ErrMalformed)
	case sc.inEncrypt:
		return sc.enc.addText(t)
	}
	return nil
}

// markup takes the markup at the start of rest, which starts with '<',
// and returns its length.
func (sc *envelopeScanner) markup(rest []byte) (int, error) {
	// One byte tells the kind, so an ordinary tag costs no prefix
	// comparisons.
	var kind byte
	if len(rest) > 1 {
		kind = rest[1]
	}
	switch {
	case kind == '!' && bytes.HasPrefix(rest, cdataOpen):
		data, n, err := skipTo(rest, cdataOpen, cdataClose, "CDATA section")
		switch {
		case err != nil:
			return 0, err
		case sc.depth == 0:
			return 0, fmt.Errorf("%w: text outside <xml>", ErrMalformed)
		case sc.inEncrypt:
			sc.enc.addCDATA(data)
		}
		return n, nil
	case kind == '!' && bytes.HasPrefix(rest, commentOpen):
		_, n, err := skipTo(rest, commentOpen, commentClose, "comment")
		if err == nil && sc.inEncrypt {
			err = fmt.Errorf("%w: Encrypt holds a comment", ErrMalformed)
		}
		return n, err
	case kind == '!':
		// A DOCTYPE could declare entities; WeChat never sends one.
		return 0, fmt.Errorf("%w: directives are not accepted", ErrMalformed)
	case kind == '?':
		_, n, err := skipTo(rest, piOpen, piClose, "processing instruction")
		if err == nil && sc.inEncrypt {
			err = fmt.Errorf("%w: Encrypt holds a processing instruction", ErrMalformed)
		}
		return n, err
	case kind == '/':
		return sc.end(rest)
	}
	return sc.start(rest)
}

// start takes a start tag (or an empty element's tag).
func (sc *envelopeScanner) start(rest []byte) (int, error) {
	name, empty, n, err := startTag(rest)
	switch {
	case err != nil:
		return 0, err
	case sc.rootDone:
		return 0, fmt.Errorf("%w: content after </xml>", ErrMalformed)
	case sc.depth == 0 && string(name) != "xml":
		return 0, fmt.Errorf("%w: root element is <%s>, want <xml>", ErrMalformed, clip(name))
	case sc.depth >= maxDepth:
		return 0, fmt.Errorf("%w: nested deeper than %d", ErrMalformed, maxDepth)
	case sc.inEncrypt:
		return 0, fmt.Errorf("%w: Encrypt holds an element", ErrMalformed)
	}
	switch local := string(localName(name)); {
	case local == "Encrypt" && sc.depth != 1:
		return 0, fmt.Errorf("%w: Encrypt is not directly under <xml>", ErrMalformed)
	case local == "Encrypt" && sc.env.hasEncrypt:
		return 0, fmt.Errorf("%w: more than one Encrypt element", ErrMalformed)
	case local == "Encrypt":
		sc.env.hasEncrypt, sc.inEncrypt = true, !empty
	case local == "MsgType" && sc.depth == 1:
		sc.env.compatible = true
	}
	if empty {
		sc.rootDone = sc.depth == 0
		return n, nil
	}
	sc.stack[sc.depth] = name
	sc.depth++
	return n, nil
}

// end takes an end tag, which must close the innermost open element.
func (sc *envelopeScanner) end(rest []byte) (int, error) {
	name, n, err := endTag(rest)
	if err != nil {
		return 0, err
	}
	if sc.depth == 0 || !bytes.Equal(sc.stack[sc.depth-1], name) {
		return 0, fmt.Errorf("%w: unexpected </%s>", ErrMalformed, clip(name))
	}
	if sc.inEncrypt {
		if sc.env.encrypt, err = sc.enc.value(); err != nil {
			return 0, err
		}
		sc.inEncrypt = false
	}
	sc.depth--
	sc.rootDone = sc.depth == 0
	return n, nil
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

func (v *encryptValue) addCDATA(data []byte) {
	v.cdata = data
	v.sections++
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
