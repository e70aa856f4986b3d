package appliance

import (
	"context"
	"log/slog"
	"net/http"
	"sync"

	"github.com/100steps/wxappliance/callback"
	"github.com/100steps/wxappliance/oauth"
)

// Late reply modes (callback.late_reply).
const (
	LateReplyCustomMessage = "custom_message"
	LateReplyDrop          = "drop"
)

// customSender sends a callback reply that missed WeChat's five seconds as
// a customer service message (客服消息), as WeChat's documentation advises.
type customSender struct {
	app     *oauth.App
	log     *slog.Logger
	observe func(result string)
	advised sync.Map // errcode -> struct{}: what to do is said once per kind
}

var _ callback.LateSender = (*customSender)(nil)

// lateAdvice says what an operator can do about WeChat refusing a late
// reply, per errcode.
var lateAdvice = map[int]string{
	oauth.CodeOutOfWindow:      "the user has not written to the account within 48 hours (or tapped a menu within a minute), so WeChat refuses customer service messages to them; nothing to fix, but answer faster or set callback.late_reply = \"drop\"",
	oauth.CodeCustomQuota:      "the account has used up its customer service messages for this user (5 per message received); late replies to them are lost until they write again",
	oauth.CodeScopeUnauthorize: "this account may not send customer service messages (unverified accounts cannot): verify it (微信认证) or set callback.late_reply = \"drop\"",
}

func (c *customSender) SendLate(ctx context.Context, msg *callback.Message, reply *callback.Reply) error {
	body, err := reply.CustomMessage(msg.FromUserName)
	if err != nil {
		return err
	}
	err = c.app.CallJSON(ctx, oauth.Request{Method: http.MethodPost, Path: "cgi-bin/message/custom/send", Body: body}, nil)
	c.observe(oauth.Errcode(err))
	c.advise(err)
	return err
}

// advise logs what to do about WeChat refusing a late reply, once per
// errcode: the refusals repeat for every late reply.
func (c *customSender) advise(err error) {
	for code, advice := range lateAdvice {
		if !oauth.HasCode(err, code) {
			continue
		}
		if _, seen := c.advised.LoadOrStore(code, struct{}{}); !seen {
			c.log.Warn("late callback reply refused by WeChat: "+advice+" (said once)", "errcode", code)
		}
	}
}
