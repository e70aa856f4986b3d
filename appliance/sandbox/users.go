package sandbox

import "slices"

// OpenIDs of the fixed test users. Other packages' tests refer to them.
const (
	OpenIDZhangsan = "oSBX_zhangsan" // 张三: Chinese nickname and region, subscribed
	OpenIDXiaoming = "oSBX_xiaoming" // 小明😀: a real emoji (4-byte UTF-8), subscribed
	OpenIDAhua     = "oSBX_ahua"     // \ue415阿花: WeChat's legacy private-use emoji, subscribed
	OpenIDLisi     = "oSBX_lisi"     // 李四: not subscribed to the account
	OpenIDTom      = "oSBX_tom"      // markup characters in nickname, English, subscribed

	// OpenIDUnsubscribed is a user who authorizes web login but does not
	// follow the account.
	OpenIDUnsubscribed = OpenIDLisi

	// OpenIDSnapshot is the virtual openid of a visitor in snapshot mode
	// (快照页): a page opened from a share in Moments, before the user
	// chose to open the full page. Its code exchange answers
	// is_snapshotuser: 1; no API accepts the openid.
	OpenIDSnapshot = "oSBX_snapshot_visitor"
)

// Nicknames of the test users, for assertions.
const (
	NicknameZhangsan = "张三"
	NicknameXiaoming = "小明😀"
	NicknameAhua     = "\ue415阿花"
	NicknameLisi     = "李四"
	NicknameTom      = `Tom <b>&</b> "O'Neil"`

	// RemarkTom has markup in cgi-bin/user/info, which has no nickname.
	RemarkTom = `<b>VIP</b> & "friend"`
)

// User is a test user as WeChat describes it in sns/userinfo and
// cgi-bin/user/info. Since 2021 WeChat returns no gender, region or
// language for users who authorized after the change (here all but 张三 and
// 阿花, whose older data it still has), and cgi-bin/user/info returns no
// nickname or avatar for anyone: sns/userinfo (snsapi_userinfo) is the only
// source of those.
type User struct {
	OpenID     string `json:"openid"`
	UnionID    string `json:"unionid"`
	Nickname   string `json:"nickname"`
	Sex        int    `json:"sex"` // 0 unknown, 1 male, 2 female
	City       string `json:"city"`
	Province   string `json:"province"`
	Country    string `json:"country"`
	HeadImgURL string `json:"headimgurl"` // relative to the sandbox root, e.g. "_files/headimg/oSBX_zhangsan/132"; answered absolute
	Language   string `json:"language"`   // zh_CN, en, ...

	Subscribed     bool   `json:"subscribed"`
	SubscribeTime  int64  `json:"subscribe_time"` // Unix seconds; 0 when not subscribed
	SubscribeScene string `json:"subscribe_scene"`
	Remark         string `json:"remark"`
	GroupID        int    `json:"groupid"`
	TagIDs         []int  `json:"tagid_list"`
}

// users is the fixed population, in the order pages list them.
var users = []User{
	{
		OpenID: OpenIDZhangsan, UnionID: "oSBXu_zhangsan", Nickname: NicknameZhangsan, Sex: 1,
		City: "广州", Province: "广东", Country: "中国", Language: "zh_CN",
		Subscribed: true, SubscribeTime: 1700000000, SubscribeScene: "ADD_SCENE_QR_CODE",
		Remark: "测试备注", TagIDs: []int{2},
	},
	{
		// Authorized after 2021: WeChat gives no gender, region or language.
		OpenID: OpenIDXiaoming, UnionID: "oSBXu_xiaoming", Nickname: NicknameXiaoming,
		Subscribed: true, SubscribeTime: 1700003600, SubscribeScene: "ADD_SCENE_SEARCH",
		TagIDs: []int{},
	},
	{
		OpenID: OpenIDAhua, UnionID: "oSBXu_ahua", Nickname: NicknameAhua, Sex: 2,
		City: "杭州", Province: "浙江", Country: "中国", Language: "zh_CN",
		Subscribed: true, SubscribeTime: 1700007200, SubscribeScene: "ADD_SCENE_PROFILE_CARD",
		TagIDs: []int{},
	},
	{
		OpenID: OpenIDLisi, UnionID: "oSBXu_lisi", Nickname: NicknameLisi,
	},
	{
		OpenID: OpenIDTom, UnionID: "oSBXu_tom", Nickname: NicknameTom, Remark: RemarkTom,
		Subscribed: true, SubscribeTime: 1700010800, SubscribeScene: "ADD_SCENE_OTHERS",
		TagIDs: []int{},
	},
}

func init() {
	for i := range users {
		users[i].HeadImgURL = filesPrefix + "headimg/" + users[i].OpenID + "/132"
	}
}

// Users returns the fixed test users. HeadImgURL is relative to the
// sandbox root here; API answers make it absolute.
func (s *Sandbox) Users() []User {
	out := slices.Clone(users)
	for i := range out {
		out[i].TagIDs = slices.Clone(out[i].TagIDs)
	}
	return out
}

// findUser returns the user with openid.
func findUser(openid string) (User, bool) {
	for _, u := range users {
		if u.OpenID == openid {
			return u, true
		}
	}
	return User{}, false
}
