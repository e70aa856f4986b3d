package callback

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"strings"
)

// maxDepth bounds nesting. WeChat's deepest push (pic_sysphoto's
// SendPicsInfo/PicList/item/PicMd5Sum) is four levels under <xml>.
const maxDepth = 16

// parseFields parses a WeChat XML document, <xml>...</xml>, into its
// fields, the way xmltodict does: a leaf element becomes its text (CDATA
// or not, unchanged), an element with children becomes a map[string]any,
// and a name that repeats becomes a []any in document order. Attributes,
// comments and processing instructions are ignored. Text beside child
// elements, if not blank, is kept under "#text".
//
// It is the one parser for both the outer body and the decrypted message,
// so the same limits apply to both. The XML WeChat sends is read by
// scanFields; decodeFields, with encoding/xml, reads (or refuses)
// everything else.
func parseFields(data []byte) (map[string]any, error) {
	if fields, ok := scanFields(data); ok {
		return fields, nil
	}
	return decodeFields(data)
}

// decodeFields is parseFields with encoding/xml, which defines what
// parseFields accepts and returns.
func decodeFields(data []byte) (map[string]any, error) {
	dec := xml.NewDecoder(bytes.NewReader(data))
	dec.Strict = true
	dec.Entity = nil // only the five predefined entities

	type frame struct {
		name     string
		fields   map[string]any
		text     strings.Builder
		children bool
	}
	var stack []*frame
	var root map[string]any
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if root != nil {
				return nil, fmt.Errorf("%w: content after </xml>", ErrMalformed)
			}
			if len(stack) == 0 && t.Name.Local != "xml" {
				return nil, fmt.Errorf("%w: root element is <%s>, want <xml>", ErrMalformed, t.Name.Local)
			}
			if len(stack) >= maxDepth {
				return nil, fmt.Errorf("%w: nested deeper than %d", ErrMalformed, maxDepth)
			}
			if len(stack) > 0 {
				stack[len(stack)-1].children = true
			}
			stack = append(stack, &frame{name: t.Name.Local})
		case xml.CharData:
			if len(stack) == 0 {
				if len(bytes.TrimSpace(t)) > 0 {
					return nil, fmt.Errorf("%w: text outside <xml>", ErrMalformed)
				}
				continue
			}
			stack[len(stack)-1].text.Write(t)
		case xml.EndElement:
			// The decoder in Strict mode has already matched the names.
			f := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			var value any
			if f.children || f.fields != nil {
				fields := f.fields
				if fields == nil {
					fields = map[string]any{}
				}
				if s := f.text.String(); strings.TrimSpace(s) != "" {
					fields["#text"] = s
				}
				value = fields
			} else {
				value = f.text.String()
			}
			if len(stack) == 0 {
				root, _ = value.(map[string]any)
				if root == nil { // <xml>text</xml> or <xml/>
					root = map[string]any{}
					if s, _ := value.(string); strings.TrimSpace(s) != "" {
						root["#text"] = s
					}
				}
				continue
			}
			parent := stack[len(stack)-1]
			if parent.fields == nil {
				parent.fields = map[string]any{}
			}
			addField(parent.fields, f.name, value)
		case xml.Directive:
			// A DOCTYPE could declare entities; WeChat never sends one.
			return nil, fmt.Errorf("%w: directives are not accepted", ErrMalformed)
		}
	}
	if root == nil {
		return nil, fmt.Errorf("%w: no <xml> element", ErrMalformed)
	}
	return root, nil
}

// addField adds value under name, turning a repeated name into a list.
func addField(fields map[string]any, name string, value any) {
	prev, ok := fields[name]
	if !ok {
		fields[name] = value
		return
	}
	if list, ok := prev.([]any); ok {
		fields[name] = append(list, value)
		return
	}
	fields[name] = []any{prev, value}
}

// text returns the text of the leaf field name, "" when it is absent or not
// a leaf.
func text(fields map[string]any, name string) string {
	s, _ := fields[name].(string)
	return s
}
