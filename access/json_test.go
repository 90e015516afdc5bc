package access

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// FuzzClaims checks the reader of claims against encoding/json: the same
// scalar claims, the same "sse" grants, the same refusal of what is not
// an object.
func FuzzClaims(f *testing.F) {
	for _, seed := range []string{
		`{}`, `null`, `[]`, `"x"`, `5`, ` { } `,
		`{"sub":"alice","exp":1700000000,"f":1.5e3,"b":true,"n":null,"o":{"a":[1,{"b":"}"}]},"l":["a","b"]}`,
		`{"na\u006de":"Al\"ice\\","sub":"\u00e9\ud83d\ude00","x":"\/"}`,
		`{"a":1,"a":"two","b":{},"b":3,"c":"x","c":[]}`,
		`{"sse":{"subscribe":["news/*","a\u002fb"],"publish":[],"other":{}}}`,
		`{"sse":{"subscribe":"x"}}`, `{"sse":{"subscribe":"x","subscribe":["y"]}}`, `{"sse":1,"sse":{}}`, `{"sse":[]}`, `{"sse":{"publish":[1]}}`,
		"{\"bad\":\"\xff\xfe\",\"ok\":\"\xc3\xa9\"}",
		"{\n\t\"sp\" :\r\n [ \"a\" , \"b\" ] ,\"e\":-0.5E-2 }",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !json.Valid([]byte(s)) {
			return
		}
		var c tokenClaims
		err := c.UnmarshalJSON([]byte(s))
		var want map[string]any
		dec := json.NewDecoder(bytes.NewReader([]byte(s)))
		dec.UseNumber()
		if dec.Decode(&want) != nil || want == nil {
			if !errors.Is(err, errNotObject) {
				t.Fatalf("%q: error %v, want errNotObject", s, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		tok := Token{claims: &c}
		wantScalars := scalarsOf(want)
		for name := range want {
			got, ok := tok.Claim(name)
			if w, wok := wantScalars[name]; ok != wok || got != w {
				t.Fatalf("%q: claim %s %q %v, want %q %v", s, name, got, ok, w, wok)
			}
		}
		gotErr := c.readGrants(&tok)
		sub, pub, wantErr := grantsOf(want)
		if (gotErr != nil) != wantErr {
			t.Fatalf("%q: grants error %v, want one: %v", s, gotErr, wantErr)
		}
		if gotErr == nil && (!equalLists(tok.Subscribe, sub) || !equalLists(tok.Publish, pub)) {
			t.Fatalf("%q: grants %q %q, want %q %q", s, tok.Subscribe, tok.Publish, sub, pub)
		}
	})
}

// scalarsOf returns the scalar claims of claims decoded by encoding/json.
func scalarsOf(claims map[string]any) map[string]string {
	m := map[string]string{}
	for k, v := range claims {
		switch v := v.(type) {
		case string:
			m[k] = v
		case json.Number:
			m[k] = formatNumber(string(v))
		case bool:
			m[k] = map[bool]string{true: "true", false: "false"}[v]
		}
	}
	return m
}

// grantsOf returns the sse claim's lists of claims decoded by
// encoding/json, and whether it is malformed.
func grantsOf(claims map[string]any) (sub, pub []string, bad bool) {
	v, ok := claims["sse"]
	if !ok {
		return nil, nil, false
	}
	sse, ok := v.(map[string]any)
	if !ok {
		return nil, nil, true
	}
	lists := [2][]string{}
	for i, name := range []string{"subscribe", "publish"} {
		l, ok := sse[name]
		if !ok {
			continue
		}
		items, ok := l.([]any)
		if !ok {
			return nil, nil, true
		}
		lists[i] = []string{}
		for _, item := range items {
			s, ok := item.(string)
			if !ok {
				return nil, nil, true
			}
			lists[i] = append(lists[i], s)
		}
	}
	return lists[0], lists[1], false
}

// equalLists reports whether a and b are equal, nil apart from empty.
func equalLists(a, b []string) bool {
	if (a == nil) != (b == nil) || len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
