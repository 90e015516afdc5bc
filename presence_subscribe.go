package caddysse

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/ssehub/caddy-sse/internal/patternset"
)

// The sse route's side of presence (SPEC section 11; the hub's side is in
// members.go): its streams' member, and who may follow a topic's members.

// validatePresence checks a route's presence setting: a placeholder, or
// nothing.
func validatePresence(key string) error {
	if key != "" && !strings.Contains(key, "{") {
		return fmt.Errorf("presence: %q is not a placeholder, such as {http.sse.token.sub} or {http.auth.user.id}", key)
	}
	return nil
}

// maxMemberLen is the longest member, in bytes: a longer value (from a
// request's header or query, say) makes no member.
const maxMemberLen = 1024

// member returns the member of r's stream: the value of the route's
// presence placeholder, "" when the route has none or the value is empty,
// unknown or longer than maxMemberLen.
func (h *Subscribe) member(r *http.Request) string {
	if h.Presence == "" {
		return ""
	}
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		return ""
	}
	v, err := repl.ReplaceOrErr(h.Presence, true, true)
	if err != nil || len(v) > maxMemberLen {
		return ""
	}
	return v
}

// checkWatched refuses, with 403, a topic whose members the request may
// not follow: following $presence/<topic> takes what subscribing to
// <topic> takes (allow and the token; for a pattern on a route with
// patterns, every topic it matches). A hub that does not count members
// refuses every one with 400.
func (h *Subscribe) checkWatched(gr *grants, watched []string) *requestError {
	if h.hub.pres == nil {
		return &requestError{status: http.StatusBadRequest,
			msg: fmt.Sprintf("the %s transport of hub %q does not count members: no %s<topic>", h.hub.transportName, h.Hub, presencePrefix)}
	}
	for _, topic := range watched {
		if err := validateTopic(topic); err != nil {
			return &requestError{status: http.StatusBadRequest, msg: fmt.Sprintf("%s%s: %v", presencePrefix, topic, err)}
		}
		var e *requestError
		if h.Patterns && patternset.IsPattern(topic) {
			e = gr.checkPatterns([]string{topic})
		} else {
			e = gr.check([]string{topic})
		}
		if e != nil {
			return e
		}
	}
	return nil
}

// presenceTopics separates the meta-topics $presence/<topic> of a
// subscription (the <topic>s) from its other topics. Any other topic
// starting with "$" is reserved (SPEC section 4): it is refused.
func presenceTopics(topics []string) (rest, watched []string, err error) {
	for i, t := range topics {
		if !strings.HasPrefix(t, "$") {
			if watched != nil {
				rest = append(rest, t)
			}
			continue
		}
		topic, ok := strings.CutPrefix(t, presencePrefix)
		if !ok || topic == "" {
			return nil, nil, fmt.Errorf("topic %q is reserved: topics starting with \"$\" are the hub's meta-topics, such as %s<topic>", t, presencePrefix)
		}
		if watched == nil {
			rest = append(make([]string, 0, len(topics)), topics[:i]...)
		}
		watched = appendTopic(watched, topic)
	}
	if watched == nil {
		return topics, nil, nil
	}
	return rest, watched, nil
}
