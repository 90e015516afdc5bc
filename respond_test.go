package caddysse

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "plain", `quote " and \ backslash`, "tab\tnewline\n\x00\x1f", "é 世界 🎉",
		"line\u2028para\u2029", "<script>&</script>", "a\xe2\x80\xa8"} {
		got := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil || back != s {
			t.Errorf("%q: encoded %s, decoded %q (%v)", s, got, back, err)
		}
	}
}

func FuzzAppendJSONString(f *testing.F) {
	f.Add("x\"\\\u2028\x01")
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			t.Skip() // topics and ids are valid UTF-8
		}
		got := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil || back != s {
			t.Fatalf("%q: encoded %s, decoded %q (%v)", s, got, back, err)
		}
	})
}
