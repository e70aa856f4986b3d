package callback

import (
	"errors"
	"strings"
	"testing"
)

func TestScanEnvelope(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		encrypt    string
		hasEncrypt bool
		compatible bool
	}{
		{"safe mode", `<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Encrypt><![CDATA[abc=]]></Encrypt></xml>`, "abc=", true, false},
		{"compatible mode, the official sample", sampleBody, sampleEncrypt, true, true},
		{"plain text value", `<xml><Encrypt>abc=</Encrypt></xml>`, "abc=", true, false},
		{"blanks around", "<?xml version=\"1.0\"?>\n<xml>\n <Encrypt>\n  <![CDATA[ abc ]]>\r\n </Encrypt >\n</xml>\n", "abc", true, false},
		{"an Encrypt in a user's text is text", `<xml><MsgType>text</MsgType><Content><![CDATA[<Encrypt>fake</Encrypt>]]></Content><Encrypt><![CDATA[real]]></Encrypt></xml>`, "real", true, true},
		{"an Encrypt in a comment is a comment", `<xml><!-- <Encrypt>fake</Encrypt> --><Encrypt>real</Encrypt></xml>`, "real", true, false},
		{"'>' inside an attribute", `<xml a="x>y" b='<Encrypt>'><Encrypt>real</Encrypt></xml>`, "real", true, false},
		{"namespace prefix, as encoding/xml reads it", `<xml><x:Encrypt>real</x:Encrypt></xml>`, "real", true, false},
		{"MsgType nested is not compatible mode", `<xml><A><MsgType>text</MsgType></A><Encrypt>real</Encrypt></xml>`, "real", true, false},
		{"empty Encrypt", `<xml><Encrypt/></xml>`, "", true, false},
		{"no Encrypt", `<xml><ToUserName>gh</ToUserName><MsgType>text</MsgType></xml>`, "", false, true},
		{"empty root", `<xml/>`, "", false, false},
		{"as deep as allowed", "<xml>" + strings.Repeat("<a>", maxDepth-1) + strings.Repeat("</a>", maxDepth-1) + "<Encrypt>e</Encrypt></xml>", "e", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, err := scanEnvelope([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if env.encrypt != tt.encrypt || env.hasEncrypt != tt.hasEncrypt || env.compatible != tt.compatible {
				t.Fatalf("got %+v, want encrypt %q, hasEncrypt %v, compatible %v", env, tt.encrypt, tt.hasEncrypt, tt.compatible)
			}
		})
	}
}

func TestScanEnvelopeRejects(t *testing.T) {
	tests := map[string]string{
		"empty":                          "",
		"blank":                          " \n",
		"not xml":                        `{"Encrypt":"abc"}`,
		"other root":                     `<root><Encrypt>abc</Encrypt></root>`,
		"two Encrypt elements":           `<xml><Encrypt>abc</Encrypt><Encrypt>def</Encrypt></xml>`,
		"two Encrypt, one prefixed":      `<xml><Encrypt>abc</Encrypt><x:Encrypt>def</x:Encrypt></xml>`,
		"two Encrypt, one empty":         `<xml><Encrypt/><Encrypt>def</Encrypt></xml>`,
		"Encrypt not under the root":     `<xml><A><Encrypt>abc</Encrypt></A></xml>`,
		"Encrypt holds an element":       `<xml><Encrypt><b>abc</b></Encrypt></xml>`,
		"Encrypt holds two sections":     `<xml><Encrypt><![CDATA[ab]]><![CDATA[c]]></Encrypt></xml>`,
		"Encrypt holds text and CDATA":   `<xml><Encrypt>a<![CDATA[bc]]></Encrypt></xml>`,
		"Encrypt holds an entity":        `<xml><Encrypt>ab&#99;</Encrypt></xml>`,
		"Encrypt holds a comment":        `<xml><Encrypt>abc<!-- x --></Encrypt></xml>`,
		"Encrypt holds a PI":             `<xml><Encrypt>abc<?x y?></Encrypt></xml>`,
		"unterminated CDATA":             `<xml><Encrypt><![CDATA[abc</Encrypt></xml>`,
		"unterminated comment":           `<xml><!-- <Encrypt>abc</Encrypt></xml>`,
		"unterminated PI":                `<?xml version="1.0"<xml></xml>`,
		"unterminated attribute":         `<xml a="><Encrypt>abc</Encrypt></xml>`,
		"unterminated tag":               `<xml><Encrypt`,
		"unterminated end tag":           `<xml><Encrypt>abc</Encrypt></xml`,
		"'<' inside a tag":               `<xml <Encrypt>abc</Encrypt></xml>`,
		"no name":                        `< xml></xml>`,
		"mismatched":                     `<xml><Encrypt>abc</Other></xml>`,
		"end tag without start":          `</xml>`,
		"unclosed":                       `<xml><Encrypt>abc</Encrypt>`,
		"second root":                    `<xml></xml><xml><Encrypt>abc</Encrypt></xml>`,
		"text after the root":            `<xml><Encrypt>abc</Encrypt></xml>trailing`,
		"text before the root":           `x<xml><Encrypt>abc</Encrypt></xml>`,
		"CDATA outside the root":         `<![CDATA[x]]><xml><Encrypt>abc</Encrypt></xml>`,
		"doctype":                        `<!DOCTYPE xml><xml><Encrypt>abc</Encrypt></xml>`,
		"too deep":                       "<xml>" + strings.Repeat("<a>", maxDepth) + strings.Repeat("</a>", maxDepth) + "</xml>",
		"a huge hostile name is clipped": "<" + strings.Repeat("n", 1<<16) + ">",
	}
	for name, body := range tests {
		t.Run(name, func(t *testing.T) {
			env, err := scanEnvelope([]byte(body))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err %v (envelope %+v), want ErrMalformed", err, env)
			}
			if len(err.Error()) > 200 {
				t.Fatalf("error of %d bytes", len(err.Error()))
			}
		})
	}
}
