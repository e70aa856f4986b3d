package appliance

import (
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/100steps/wxappliance/callback"
)

// The [callback] keys beyond path, token and keys: the reply deadline, the
// timestamp window, domain verification files and reply rules. They live
// here, beside their validation, to keep the callback's configuration in
// one place.

// CallbackRules is [callback.rules]: the replies sent when no RPC backend
// answers a message.
type CallbackRules struct {
	// Subscribe greets new followers.
	Subscribe *ReplyConfig `toml:"subscribe"`
	// Keywords are tried in order on text (and recognised voice); the
	// first match wins.
	Keywords []KeywordConfig `toml:"keywords"`
	// Default answers a user's message no keyword matched; never events.
	Default *ReplyConfig `toml:"default"`
}

// ReplyConfig is a passive reply as written in TOML; the fields are
// callback.Reply's, with type defaulting to "text".
type ReplyConfig struct {
	Type         string          `toml:"type"`
	Content      string          `toml:"content"`
	MediaID      string          `toml:"media_id"`
	Title        string          `toml:"title"`
	Description  string          `toml:"description"`
	MusicURL     string          `toml:"music_url"`
	HQMusicURL   string          `toml:"hq_music_url"`
	ThumbMediaID string          `toml:"thumb_media_id"`
	Articles     []ArticleConfig `toml:"articles"`
}

// ArticleConfig is one article of a news reply.
type ArticleConfig struct {
	Title       string `toml:"title"`
	Description string `toml:"description"`
	PicURL      string `toml:"pic_url"`
	URL         string `toml:"url"`
}

// KeywordConfig is one [[callback.rules.keywords]]: the keyword, how it
// matches (exact, the default, or contains) and the reply's fields inline.
type KeywordConfig struct {
	Keyword string `toml:"keyword"`
	Match   string `toml:"match"`
	ReplyConfig
}

// reply converts to the callback's type, applying the default type.
func (r ReplyConfig) reply() callback.Reply {
	out := callback.Reply{
		Type: r.Type, Content: r.Content, MediaID: r.MediaID, Title: r.Title,
		Description: r.Description, MusicURL: r.MusicURL, HQMusicURL: r.HQMusicURL,
		ThumbMediaID: r.ThumbMediaID,
	}
	if out.Type == "" {
		out.Type = callback.ReplyText
	}
	for _, a := range r.Articles {
		out.Articles = append(out.Articles, callback.Article{
			Title: a.Title, Description: a.Description, PicURL: a.PicURL, URL: a.URL,
		})
	}
	return out
}

// rules converts [callback.rules] to the callback's rules.
func (r CallbackRules) rules() callback.Rules {
	var out callback.Rules
	if r.Subscribe != nil {
		reply := r.Subscribe.reply()
		out.Subscribe = &reply
	}
	if r.Default != nil {
		reply := r.Default.reply()
		out.Default = &reply
	}
	for _, k := range r.Keywords {
		match := k.Match
		if match == "" {
			match = callback.MatchExact
		}
		out.Keywords = append(out.Keywords, callback.Keyword{Keyword: k.Keyword, Match: match, Reply: k.reply()})
	}
	return out
}

// verifyFileName is the name WeChat gives its domain verification files.
var verifyFileName = regexp.MustCompile(`^MP_verify_[A-Za-z0-9]{1,64}\.txt$`)

// validateCallbackExtras checks the keys above; called by validateCallback.
func (c *Config) validateCallbackExtras(bad func(key, format string, args ...any)) {
	cb := c.Callback
	if d := cb.ReplyTimeout.D(); d <= 0 || d >= 5*time.Second {
		bad("callback.reply_timeout", "must be above 0 and under 5s (WeChat gives up after 5s), got %v", d)
	}
	if cb.LateReply != LateReplyCustomMessage && cb.LateReply != LateReplyDrop {
		bad("callback.late_reply", "want %q or %q, got %q", LateReplyCustomMessage, LateReplyDrop, cb.LateReply)
	}
	if d := cb.LateReplyWindow.D(); d <= 0 || d > 48*time.Hour {
		bad("callback.late_reply_window", "must be above 0 and at most 48h (WeChat's window for customer service messages), got %v", d)
	}
	if d := cb.TimestampWindow.D(); d < time.Minute || d > 24*time.Hour {
		bad("callback.timestamp_window", "must be between 1m and 24h (WeChat's retries repeat the first timestamp for about 15s), got %v", d)
	}
	names := make([]string, 0, len(cb.VerifyFiles))
	for name := range cb.VerifyFiles {
		names = append(names, name)
	}
	slices.Sort(names) // problems in a stable order
	for _, name := range names {
		key := fmt.Sprintf("callback.verify_files.%q", name)
		switch {
		case !verifyFileName.MatchString(name):
			bad(key, "want a name such as MP_verify_AbC123.txt, as WeChat gives it")
		case cb.VerifyFiles[name] == "":
			bad(key, "content must not be empty")
		case len(cb.VerifyFiles[name]) > 1024:
			bad(key, "content is over 1024 bytes; WeChat's is the short code in the name")
		case cb.Path == "/"+name:
			bad(key, "is callback.path")
		}
	}
	r := cb.Rules
	if r.Subscribe != nil {
		reply := r.Subscribe.reply()
		if err := reply.Validate(); err != nil {
			bad("callback.rules.subscribe", "%v", err)
		}
	}
	if r.Default != nil {
		reply := r.Default.reply()
		if err := reply.Validate(); err != nil {
			bad("callback.rules.default", "%v", err)
		}
	}
	for i, k := range r.Keywords {
		key := fmt.Sprintf("callback.rules.keywords[%d]", i)
		if k.Keyword == "" {
			bad(key+".keyword", "must not be empty")
		}
		if k.Match != "" && k.Match != callback.MatchExact && k.Match != callback.MatchContains {
			bad(key+".match", "want %q or %q, got %q", callback.MatchExact, callback.MatchContains, k.Match)
		}
		reply := k.reply()
		if err := reply.Validate(); err != nil {
			bad(key, "%v", err)
		}
	}
}
