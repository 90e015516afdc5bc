package caddysse

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
)

// maxTopicLen is the longest topic, in bytes.
const maxTopicLen = 1024

// defaultTopic is the topic of requests that name none.
const defaultTopic = "default"

// validateTopic reports what is wrong with a topic: it must be non-empty
// UTF-8 of at most 1024 bytes without control characters (category Cc).
func validateTopic(t string) error {
	switch {
	case t == "":
		return fmt.Errorf("topic is empty")
	case len(t) > maxTopicLen:
		return fmt.Errorf("topic %.40q... is longer than %d bytes", t, maxTopicLen)
	case !utf8.ValidString(t):
		return fmt.Errorf("topic %q is not valid UTF-8", t)
	}
	for _, r := range t {
		if unicode.IsControl(r) {
			return fmt.Errorf("topic %q contains the control character %U", t, r)
		}
	}
	return nil
}

// appendTopic appends t to topics unless it is already there.
func appendTopic(topics []string, t string) []string {
	for _, have := range topics {
		if have == t {
			return topics
		}
	}
	return append(topics, t)
}

// expandTopics evaluates topic templates for r. A template is dropped when
// its result is empty or when one of its placeholders is unknown or empty,
// so that "user/{http.auth.user.id}" gives no topic, rather than "user/",
// to a request without a user. The results are validated and deduplicated.
func expandTopics(r *http.Request, templates []string) ([]string, error) {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	topics := make([]string, 0, len(templates))
	for _, tmpl := range templates {
		t := tmpl
		if repl != nil {
			var err error
			if t, err = repl.ReplaceOrErr(tmpl, true, true); err != nil {
				continue
			}
		}
		if t == "" {
			continue
		}
		if err := validateTopic(t); err != nil {
			return nil, err
		}
		topics = appendTopic(topics, t)
	}
	return topics, nil
}

// requestTopics validates and deduplicates the topics a request names.
func requestTopics(values []string) ([]string, error) {
	topics := make([]string, 0, len(values))
	for _, t := range values {
		if err := validateTopic(t); err != nil {
			return nil, err
		}
		topics = appendTopic(topics, t)
	}
	return topics, nil
}

// publishTopics validates and deduplicates the topics a publish request
// names: none may be reserved.
func publishTopics(values []string) ([]string, error) {
	topics, err := requestTopics(values)
	if err != nil {
		return nil, err
	}
	return topics, checkReserved(topics)
}

// checkReserved refuses a topic to publish to that starts with "$": such
// topics are reserved for the hub's meta-topics (SPEC section 4), such as
// $presence/<topic>, whose events only the hub sends.
func checkReserved(topics []string) error {
	for _, t := range topics {
		if strings.HasPrefix(t, "$") {
			return fmt.Errorf("topic %q is reserved: topics starting with \"$\" are the hub's meta-topics, which no one publishes to", t)
		}
	}
	return nil
}

// validateEventType checks an event type: it ends up on one line.
func validateEventType(t string) error {
	if i := strings.IndexAny(t, "\r\n\x00"); i >= 0 {
		return fmt.Errorf("event type %q contains CR, LF or NUL", t)
	}
	if !utf8.ValidString(t) {
		return fmt.Errorf("event type %q is not valid UTF-8", t)
	}
	return nil
}

// queryUnescape decodes a form component, allocating only when there is
// something to decode.
func queryUnescape(s string) (string, error) {
	if !strings.ContainsAny(s, "%+") {
		return s, nil
	}
	return url.QueryUnescape(s)
}

// validateEventTypeBytes is validateEventType for a line's bytes (which
// hold no CR or LF).
func validateEventTypeBytes(b []byte) error {
	if bytes.IndexByte(b, 0) >= 0 || !utf8.Valid(b) {
		return validateEventType(string(b))
	}
	return nil
}
