package cluster

import (
	"reflect"
	"strconv"
	"testing"

	"github.com/100steps/wxappliance/rpc"
)

func TestUnion(t *testing.T) {
	everything := rpc.Filter{MsgTypes: []string{}, Events: []string{}}
	many := make([]string, 0, maxAdvertNames+1)
	for i := range maxAdvertNames + 1 {
		many = append(many, "t"+strconv.Itoa(i))
	}
	for _, tt := range []struct {
		name string
		fs   []rpc.Filter
		want rpc.Filter
		ok   bool
	}{
		{"no subscribers", nil, rpc.Filter{}, false},
		{"one takes everything", []rpc.Filter{{MsgTypes: []string{"text"}}, {}}, everything, true},
		{"names merged, lower case, sorted, once", []rpc.Filter{
			{MsgTypes: []string{"text", "IMAGE"}, Events: []string{}},
			{MsgTypes: []string{"Text"}, Events: []string{"CLICK", "subscribe"}},
		}, rpc.Filter{MsgTypes: []string{"image", "text"}, Events: []string{"click", "subscribe"}}, true},
		{"too many names: everything", []rpc.Filter{{MsgTypes: many}}, everything, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := union(tt.fs)
			if ok != tt.ok || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("union = %+v %v, want %+v %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// The union matches a message exactly when one of the filters does.
func TestUnionMatchesLikeItsFilters(t *testing.T) {
	fs := []rpc.Filter{
		{MsgTypes: []string{"text", "IMAGE"}},
		{Events: []string{"CLICK", "subscribe"}},
		{MsgTypes: []string{"location"}, Events: []string{"VIEW"}},
	}
	u, _ := union(fs)
	for _, m := range []struct{ msgType, event string }{
		{"text", ""}, {"image", ""}, {"voice", ""}, {"location", ""}, {"link", ""},
		{"event", "click"}, {"event", "SUBSCRIBE"}, {"event", "view"}, {"event", "SCAN"}, {"EVENT", "CLICK"},
		{"text", "CLICK"}, {"click", ""},
	} {
		any := false
		for _, f := range fs {
			any = any || f.Matches(m.msgType, m.event)
		}
		if got := u.Matches(m.msgType, m.event); got != any {
			t.Errorf("%s/%s: union matches %v, the filters %v", m.msgType, m.event, got, any)
		}
	}
}
