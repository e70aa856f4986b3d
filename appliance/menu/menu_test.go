package menu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	click := func(name, key string) Button { return Button{Type: "click", Name: name, Key: key} }
	ok := Menu{Button: []Button{
		click("今日歌曲", "V1001_TODAY_MUSIC"),
		{Name: "菜单", SubButton: []Button{
			{Type: "view", Name: "搜索", URL: "https://example.com/?a=1&b=2"},
			{Type: "miniprogram", Name: "小程序", URL: "https://example.com", AppID: "wx286b93c14bbf93aa", PagePath: "pages/index"},
			{Type: "scancode_push", Name: "扫码", Key: "scan"},
			{Type: "media_id", Name: "图片", MediaID: "MEDIA"},
			{Type: "article_id", Name: "文章", ArticleID: "ARTICLE"},
		}},
	}}
	if err := ok.Validate("menu"); err != nil {
		t.Fatalf("valid menu refused: %v", err)
	}
	for _, tt := range []struct {
		name string
		menu Menu
		want []string
	}{
		{"no buttons", Menu{}, []string{"menu.button: a menu has 1 to 3 buttons, got 0", "40016"}},
		{"four buttons", Menu{Button: []Button{click("a", "a"), click("b", "b"), click("c", "c"), click("d", "d")}}, []string{"got 4"}},
		// Six Chinese characters are 18 bytes, over the 16 of a top-level name.
		{"long name in bytes", Menu{Button: []Button{click("一二三四五六", "k")}}, []string{"menu.button[0].name", "16 bytes", "40018"}},
		{"empty name", Menu{Button: []Button{click(" ", "k")}}, []string{"menu.button[0].name: must not be empty"}},
		{"click without key", Menu{Button: []Button{{Type: "click", Name: "x"}}}, []string{"menu.button[0].key: a click button needs key"}},
		{"unknown type", Menu{Button: []Button{{Type: "clik", Name: "x", Key: "k"}}}, []string{`menu.button[0].type: unknown button type "clik"`}},
		{"miniprogram", Menu{Button: []Button{{Type: "miniprogram", Name: "x", URL: "https://a.com"}}}, []string{"menu.button[0].appid", "menu.button[0].pagepath"}},
		{"relative url", Menu{Button: []Button{{Type: "view", Name: "x", URL: "/page"}}}, []string{"menu.button[0].url: want an absolute http(s) URL"}},
		{"long key", Menu{Button: []Button{click("x", strings.Repeat("k", 129))}}, []string{"at most 128 bytes", "40019"}},
		{"six sub-buttons", Menu{Button: []Button{{Name: "x", SubButton: []Button{click("a", "a"), click("b", "b"), click("c", "c"), click("d", "d"), click("e", "e"), click("f", "f")}}}},
			[]string{"menu.button[0].sub_button: a button has at most 5 sub-buttons, got 6", "40023"}},
		{"parent with a type", Menu{Button: []Button{{Type: "click", Name: "x", Key: "k", SubButton: []Button{click("a", "a")}}}}, []string{"menu.button[0].type: a button with sub-buttons has no type"}},
		{"long sub name", Menu{Button: []Button{{Name: "x", SubButton: []Button{click(strings.Repeat("长", 21), "a")}}}}, []string{"menu.button[0].sub_button[0].name", "60 bytes"}},
		{"nested sub-buttons", Menu{Button: []Button{{Name: "x", SubButton: []Button{{Type: "click", Name: "a", Key: "a", SubButton: []Button{click("b", "b")}}}}}}, []string{"sub-buttons cannot have sub-buttons"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.menu.Validate("menu")
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q missing from:\n%v", w, err)
				}
			}
		})
	}
}

// The JSON WeChat receives keeps Chinese and '&' as written: SDKs that sent
// \u escapes or &amp; had menus shown as escapes or broken links.
func TestJSON(t *testing.T) {
	m := Menu{Button: []Button{{Type: "view", Name: "搜索", URL: "https://example.com/?a=1&b=2"}}}
	got := string(m.JSON())
	want := `{"button":[{"type":"view","name":"搜索","url":"https://example.com/?a=1&b=2"}]}`
	if got != want {
		t.Fatalf("%s\nwant %s", got, want)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, tt := range []struct{ name, file, body string }{
		{"WeChat's JSON", "menu.json", `{"button":[{"type":"click","name":"今日歌曲","key":"K"}]}`},
		{"menu/get's answer", "got.json", `{"menu":{"button":[{"type":"click","name":"今日歌曲","key":"K","sub_button":[]}],"menuid":1}}`},
		{"TOML", "menu.toml", "[[button]]\ntype = \"click\"\nname = \"今日歌曲\"\nkey = \"K\"\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Load(write(tt.file, tt.body))
			if err != nil || len(m.Button) != 1 || m.Button[0].Name != "今日歌曲" || m.Button[0].Key != "K" {
				t.Fatalf("%+v %v", m, err)
			}
		})
	}
	if _, err := Load(write("typo.json", `{"button":[{"type":"click","nmae":"x"}]}`)); err == nil || !strings.Contains(err.Error(), "nmae") {
		t.Fatalf("unknown member: %v", err)
	}
	if _, err := Load(write("typo.toml", "[[button]]\nnmae = \"x\"\n")); err == nil || !strings.Contains(err.Error(), "nmae") {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.json")); err == nil {
		t.Fatal("missing file accepted")
	}
}
