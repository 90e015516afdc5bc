package caddysse

import "strings"

// streamQuery is what a subscription request's query string says: its
// topic parameters and the last event id it names, if any.
type streamQuery struct {
	topics []string
	lastID string
}

// parseStreamQuery reads the topic, last_event_id and lastEventID
// parameters of a raw query in one pass, without building a map: every
// stream request goes through here. A component with a malformed escape
// is kept as sent (url.ParseQuery would drop the parameter). The values
// are copies: a stream keeps them, and a stream whose connection was
// taken over keeps nothing else of its request (a token in the query
// included).
func parseStreamQuery(raw string) streamQuery {
	var q streamQuery
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		key, value, _ := strings.Cut(pair, "=")
		switch unescape(key) {
		case "topic":
			q.topics = append(q.topics, strings.Clone(unescape(value)))
		case "last_event_id", "lastEventID":
			if q.lastID == "" {
				q.lastID = strings.Clone(unescape(value))
			}
		}
	}
	return q
}

// unescape decodes a query component, or keeps it as sent if its escapes
// are malformed.
func unescape(s string) string {
	if u, err := queryUnescape(s); err == nil {
		return u
	}
	return s
}
