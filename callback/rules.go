package callback

import (
	"fmt"
	"strings"
)

// Keyword match modes.
const (
	MatchExact    = "exact"    // the whole text, trimmed, equals the keyword
	MatchContains = "contains" // the keyword appears anywhere in the text
)

// Rules are the configured replies, used when no RPC subscriber answers.
// The zero value answers nothing.
type Rules struct {
	// Subscribe is sent to a new follower (subscribe event, with or
	// without a QR scene).
	Subscribe *Reply
	// Keywords are tried in order on text messages (Content) and on voice
	// messages with speech recognition (Recognition); the first match
	// wins. Matching ignores case.
	Keywords []Keyword
	// Default answers a user's message (any MsgType but event) that no
	// keyword matched. Events never get it: a reply to a LOCATION report
	// every few seconds, or to an unsubscribe, is noise or undeliverable.
	Default *Reply
}

// Keyword is one keyword rule.
type Keyword struct {
	Keyword string
	Match   string // MatchExact or MatchContains
	Reply   Reply
}

// Validate checks every reply and keyword; errors name the rule.
func (r *Rules) Validate() error {
	if r.Subscribe != nil {
		if err := r.Subscribe.Validate(); err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
	}
	if r.Default != nil {
		if err := r.Default.Validate(); err != nil {
			return fmt.Errorf("default: %w", err)
		}
	}
	for i, k := range r.Keywords {
		if strings.TrimSpace(k.Keyword) == "" {
			return fmt.Errorf("keywords[%d]: keyword is empty", i)
		}
		if k.Match != MatchExact && k.Match != MatchContains {
			return fmt.Errorf("keywords[%d]: match must be %q or %q, got %q", i, MatchExact, MatchContains, k.Match)
		}
		if err := k.Reply.Validate(); err != nil {
			return fmt.Errorf("keywords[%d]: %w", i, err)
		}
	}
	return nil
}

// Reply returns the rule's reply to msg, or nil when no rule applies.
func (r *Rules) Reply(msg *Message) *Reply {
	if msg.MsgType == TypeEvent {
		if msg.IsEvent(EventSubscribe) {
			return r.Subscribe
		}
		return nil
	}
	var text string
	switch msg.MsgType {
	case TypeText:
		text = msg.Content
	case TypeVoice:
		text = msg.Recognition
	}
	if text != "" {
		for i := range r.Keywords {
			if r.Keywords[i].matches(text) {
				return &r.Keywords[i].Reply
			}
		}
	}
	return r.Default
}

func (k *Keyword) matches(text string) bool {
	if k.Match == MatchExact {
		return strings.EqualFold(strings.TrimSpace(text), strings.TrimSpace(k.Keyword))
	}
	return strings.Contains(strings.ToLower(text), strings.ToLower(k.Keyword))
}
