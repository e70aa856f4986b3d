// Package menu is the account's custom menu (自定义菜单) as configuration:
// its shape in TOML and in WeChat's JSON, and the rules WeChat checks in
// cgi-bin/menu/create, so a menu is refused here, with the key at fault,
// before WeChat refuses it with a bare errcode.
package menu

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"
)

// Menu is the body of cgi-bin/menu/create.
type Menu struct {
	Button []Button `toml:"button" json:"button"`
}

// Button is a top-level button or a sub-button. A top-level button with
// sub-buttons has no type of its own.
type Button struct {
	Type      string   `toml:"type" json:"type,omitempty"`
	Name      string   `toml:"name" json:"name"`
	Key       string   `toml:"key" json:"key,omitempty"`
	URL       string   `toml:"url" json:"url,omitempty"`
	MediaID   string   `toml:"media_id" json:"media_id,omitempty"`
	AppID     string   `toml:"appid" json:"appid,omitempty"`
	PagePath  string   `toml:"pagepath" json:"pagepath,omitempty"`
	ArticleID string   `toml:"article_id" json:"article_id,omitempty"`
	SubButton []Button `toml:"sub_button" json:"sub_button,omitempty"`
}

// Limits WeChat documents for cgi-bin/menu/create, with the errcode it
// answers when one is broken.
const (
	MaxButtons    = 3    // top-level buttons (40016 invalid button size)
	MaxSubButtons = 5    // sub-buttons of one button (40023 invalid sub button size)
	MaxName       = 16   // bytes of a top-level name (40018 invalid button name size)
	MaxSubName    = 60   // bytes of a sub-button name (40025 invalid sub button name size)
	MaxKey        = 128  // bytes of a key (40019 invalid button key size)
	MaxURL        = 1024 // bytes of a url (40020 invalid button url size)
)

// needs lists each button type and the fields it must have. A UTF-8
// Chinese character is 3 bytes: four make a 12-byte top-level name.
var needs = map[string][]string{
	"click":                {"key"},
	"view":                 {"url"},
	"scancode_push":        {"key"},
	"scancode_waitmsg":     {"key"},
	"pic_sysphoto":         {"key"},
	"pic_photo_or_album":   {"key"},
	"pic_weixin":           {"key"},
	"location_select":      {"key"},
	"media_id":             {"media_id"},
	"view_limited":         {"media_id"},
	"article_id":           {"article_id"},
	"article_view_limited": {"article_id"},
	"miniprogram":          {"url", "appid", "pagepath"},
}

// Validate reports every rule m breaks, each naming its key under prefix
// (e.g. "menu"), as check-config does for the rest of the config.
func (m Menu) Validate(prefix string) error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if n := len(m.Button); n < 1 || n > MaxButtons {
		bad(prefix+".button", "a menu has 1 to %d buttons, got %d (WeChat: 40016 invalid button size)", MaxButtons, n)
	}
	for i, b := range m.Button {
		key := fmt.Sprintf("%s.button[%d]", prefix, i)
		checkName(bad, key, b.Name, MaxName, 40018)
		if len(b.SubButton) == 0 {
			b.validate(bad, key)
			continue
		}
		if len(b.SubButton) > MaxSubButtons {
			bad(key+".sub_button", "a button has at most %d sub-buttons, got %d (WeChat: 40023 invalid sub button size)", MaxSubButtons, len(b.SubButton))
		}
		if b.Type != "" {
			bad(key+".type", "a button with sub-buttons has no type of its own, got %q", b.Type)
		}
		for j, sub := range b.SubButton {
			subKey := fmt.Sprintf("%s.sub_button[%d]", key, j)
			checkName(bad, subKey, sub.Name, MaxSubName, 40025)
			if len(sub.SubButton) > 0 {
				bad(subKey+".sub_button", "sub-buttons cannot have sub-buttons")
			}
			sub.validate(bad, subKey)
		}
	}
	return errors.Join(errs...)
}

func checkName(bad func(string, string, ...any), key, name string, max, code int) {
	switch {
	case strings.TrimSpace(name) == "":
		bad(key+".name", "must not be empty")
	case len(name) > max:
		bad(key+".name", "at most %d bytes (a Chinese character is 3), got %d (WeChat: %d)", max, len(name), code)
	}
}

// validate checks a button that acts: its type and the fields it needs.
func (b Button) validate(bad func(string, string, ...any), key string) {
	fields, ok := needs[b.Type]
	if !ok {
		bad(key+".type", "unknown button type %q (want one of click, view, miniprogram, scancode_push, scancode_waitmsg, pic_sysphoto, pic_photo_or_album, pic_weixin, location_select, media_id, article_id, article_view_limited)", b.Type)
		return
	}
	values := map[string]string{"key": b.Key, "url": b.URL, "media_id": b.MediaID, "appid": b.AppID, "pagepath": b.PagePath, "article_id": b.ArticleID}
	for _, f := range fields {
		if values[f] == "" {
			bad(key+"."+f, "a %s button needs %s", b.Type, f)
		}
	}
	if len(b.Key) > MaxKey {
		bad(key+".key", "at most %d bytes, got %d (WeChat: 40019)", MaxKey, len(b.Key))
	}
	if b.URL != "" {
		if len(b.URL) > MaxURL {
			bad(key+".url", "at most %d bytes, got %d (WeChat: 40020)", MaxURL, len(b.URL))
		}
		if u, err := url.Parse(b.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(key+".url", "want an absolute http(s) URL, got %q (WeChat: 40055 invalid button url domain)", b.URL)
		}
	}
}

// JSON is the menu as cgi-bin/menu/create takes it: Chinese as it is, '&'
// in URLs unescaped.
func (m Menu) JSON() []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.Encode(m) // strings and slices: cannot fail
	return bytes.TrimSpace(buf.Bytes())
}

// Load reads a menu file: WeChat's own JSON (.json, as the documentation and
// menu/get show it, with or without the {"menu": ...} around it) or TOML
// ([[button]] tables, as in the config).
func Load(path string) (Menu, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Menu{}, fmt.Errorf("menu file: %w", err)
	}
	var m Menu
	if strings.EqualFold(filepath.Ext(path), ".json") {
		var wrapped struct {
			Menu *Menu `json:"menu"`
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		if err := dec.Decode(&wrapped); err == nil && wrapped.Menu != nil {
			return *wrapped.Menu, nil
		}
		if err := strictJSON(data, &m); err != nil {
			return Menu{}, fmt.Errorf("menu file %s: %w", path, err)
		}
		return m, nil
	}
	md, err := toml.Decode(string(data), &m)
	if err != nil {
		return Menu{}, fmt.Errorf("menu file %s: %w", path, err)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		return Menu{}, fmt.Errorf("menu file %s: unknown key %s", path, undecoded[0])
	}
	return m, nil
}

func strictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
