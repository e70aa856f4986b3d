package callback

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// What WeChat sends, and what the appliance renders, goes the fast way;
// anything encoding/xml would treat specially goes to encoding/xml. Either
// way parseFields returns what encoding/xml reads.
func TestScanFields(t *testing.T) {
	fast := map[string]string{
		"text":        textXML("1", "你好 <b> ]] > 🙂"),
		"event":       eventXML("subscribe", 1700000000, "qrscene_1"),
		"envelope":    "<xml><ToUserName><![CDATA[gh_x]]></ToUserName><Encrypt><![CDATA[abc+/=]]></Encrypt></xml>",
		"nested":      "<xml><SendPicsInfo><Count>2</Count><PicList><item><PicMd5Sum>a</PicMd5Sum></item><item><PicMd5Sum>b</PicMd5Sum></item></PicList></SendPicsInfo></xml>",
		"blanks":      "\n<xml>\n\t<A>1</A>\n</xml>\n",
		"empty":       "<xml><EventKey/><Ticket></Ticket></xml>",
		"text beside": "<xml>lead<A>1</A>tail</xml>",
		"root text":   "<xml>just text</xml>",
		"root empty":  "<xml/>",
		"split cdata": "<xml><A><![CDATA[x]]]]><![CDATA[>y]]></A></xml>",
	}
	names, _ := filepath.Glob(filepath.Join("testdata", "reply_*.xml"))
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		fast[filepath.Base(name)] = string(b)
	}
	slow := map[string]string{
		"attribute":    `<xml><A b="1">x</A></xml>`,
		"entity":       "<xml><A>x&amp;y</A></xml>",
		"char ref":     "<xml><A>&#20320;</A></xml>",
		"carriage":     "<xml><A>x\r\ny</A></xml>",
		"comment":      "<xml><!-- c --><A>x</A></xml>",
		"declaration":  `<?xml version="1.0"?><xml><A>x</A></xml>`,
		"namespace":    "<xml><w:A>x</w:A></xml>",
		"blank in tag": "<xml><A >x</A ></xml>",
		"control":      "<xml><A>\x01</A></xml>",
		"bad utf-8":    "<xml><A>\xff</A></xml>",
		"bare ]]>":     "<xml><A>]]></A></xml>",
		"mismatch":     "<xml><A>x</B></xml>",
		"unclosed":     "<xml><A>x</A>",
		"other root":   "<doc><A>x</A></doc>",
		"after root":   "<xml></xml><xml></xml>",
		"text outside": "x<xml></xml>",
	}
	for name, body := range fast {
		t.Run("fast/"+name, func(t *testing.T) {
			got, ok := scanFields([]byte(body))
			want, err := decodeFields([]byte(body))
			if !ok || err != nil {
				t.Fatalf("scan ok %v, encoding/xml %v", ok, err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("scan %#v\nencoding/xml %#v", got, want)
			}
		})
	}
	for name, body := range slow {
		t.Run("slow/"+name, func(t *testing.T) {
			if _, ok := scanFields([]byte(body)); ok {
				t.Fatal("scanFields took it")
			}
			got, gotErr := parseFields([]byte(body))
			want, wantErr := decodeFields([]byte(body))
			if !reflect.DeepEqual(got, want) || (gotErr == nil) != (wantErr == nil) {
				t.Fatalf("parseFields %#v %v, encoding/xml %#v %v", got, gotErr, want, wantErr)
			}
		})
	}
}
