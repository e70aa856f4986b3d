package main

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/100steps/wxappliance/appliance/sandbox"
	"github.com/100steps/wxappliance/callback"
)

// callbackScenario posts safe-mode (encrypted) text messages to the
// callback, as WeChat does, each with a new MsgId so every one is verified,
// decrypted, deduped, matched against a keyword rule and answered with an
// encrypted reply, never served from the dedupe store. With several
// instances the messages go to each in turn.
func callbackScenario(bases []string) (scenario, error) {
	crypter, err := callback.NewCrypter(sandbox.DefaultEncodingAESKey, sandbox.DefaultAppID)
	if err != nil {
		return scenario{}, err
	}
	base := roundRobin(bases)
	var msgID atomic.Int64
	msgID.Store(time.Now().UnixNano())
	return scenario{
		name: "POST /callback (safe mode text, keyword reply)",
		request: func() (*http.Request, error) {
			id := msgID.Add(1)
			xml := fmt.Sprintf(`<xml><ToUserName><![CDATA[gh_sandbox000000]]></ToUserName><FromUserName><![CDATA[oSBX_zhangsan]]></FromUserName><CreateTime>%d</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[帮助]]></Content><MsgId>%d</MsgId></xml>`,
				time.Now().Unix(), id)
			encrypt, err := crypter.Encrypt(rand.Reader, []byte(xml))
			if err != nil {
				return nil, err
			}
			ts := strconv.FormatInt(time.Now().Unix(), 10)
			nonce := strconv.FormatInt(id%1_000_000_000, 10)
			q := url.Values{
				"signature":     {callback.Signature(sandbox.DefaultCallbackToken, ts, nonce)},
				"timestamp":     {ts},
				"nonce":         {nonce},
				"openid":        {"oSBX_zhangsan"},
				"encrypt_type":  {"aes"},
				"msg_signature": {callback.Signature(sandbox.DefaultCallbackToken, ts, nonce, encrypt)},
			}
			body := `<xml><ToUserName><![CDATA[gh_sandbox000000]]></ToUserName><Encrypt><![CDATA[` + encrypt + `]]></Encrypt></xml>`
			req, err := http.NewRequest(http.MethodPost, base()+"/callback?"+q.Encode(), strings.NewReader(body))
			if err != nil {
				return nil, err
			}
			req.Header.Set("Content-Type", "text/xml")
			return req, nil
		},
	}, nil
}
