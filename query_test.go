package caddysse

import (
	"net/url"
	"slices"
	"testing"
)

func TestParseStreamQuery(t *testing.T) {
	cases := []struct {
		name, raw string
		topics    []string
		lastID    string
	}{
		{"empty", "", nil, ""},
		{"one topic", "topic=a", []string{"a"}, ""},
		{"topics in order", "topic=b&topic=a&topic=b", []string{"b", "a", "b"}, ""},
		{"escapes", "topic=a%2Fb&topic=c+d&topic=%C3%A9", []string{"a/b", "c d", "é"}, ""},
		{"empty topic kept for validation", "topic=&topic", []string{"", ""}, ""},
		{"malformed escape kept as sent", "topic=100%&topic=%zz", []string{"100%", "%zz"}, ""},
		{"escaped key", "%74opic=a", []string{"a"}, ""},
		{"last_event_id", "last_event_id=x-1", nil, "x-1"},
		{"lastEventID", "lastEventID=x-2", nil, "x-2"},
		{"first last id wins", "lastEventID=x-2&last_event_id=x-1", nil, "x-2"},
		{"empty last id does not count", "last_event_id=&lastEventID=x-3", nil, "x-3"},
		{"escaped last id", "last_event_id=a%2Bb%20c", nil, "a+b c"},
		{"other parameters ignored", "foo=1&topic=a&_=123&last_event_id=i&bar", []string{"a"}, "i"},
		{"empty pairs", "&&topic=a&&", []string{"a"}, ""},
		{"semicolons are not separators", "topic=a;topic=b", []string{"a;topic=b"}, ""},
		{"key case matters", "Topic=a&TOPIC=b", nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q := parseStreamQuery(c.raw)
			if !slices.Equal(q.topics, c.topics) || q.lastID != c.lastID {
				t.Fatalf("parseStreamQuery(%q) = %q, %q; want %q, %q", c.raw, q.topics, q.lastID, c.topics, c.lastID)
			}
		})
	}
}

// TestParseStreamQueryAgreesWithURL checks the parser against
// url.ParseQuery on well-formed queries.
func TestParseStreamQueryAgreesWithURL(t *testing.T) {
	for _, raw := range []string{
		"topic=a&topic=b",
		"topic=a+b&last_event_id=z%3D1",
		"x=1&topic=%E2%9C%93&lastEventID=9",
		url.Values{"topic": {"a&b", "c=d", "e f"}, "last_event_id": {"id 1"}}.Encode(),
	} {
		v, err := url.ParseQuery(raw)
		if err != nil {
			t.Fatal(err)
		}
		want := v.Get("last_event_id")
		if want == "" {
			want = v.Get("lastEventID")
		}
		q := parseStreamQuery(raw)
		if !slices.Equal(q.topics, v["topic"]) || q.lastID != want {
			t.Errorf("%q: got %q %q, url.ParseQuery %q %q", raw, q.topics, q.lastID, v["topic"], want)
		}
	}
}
