package access

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// maxDate bounds the seconds of a NumericDate: a float64 is exact up to
// it, and time.Unix does not overflow.
const maxDate = 1 << 53

// errNotObject refuses claims that are not a JSON object.
var errNotObject = errors.New("the claims are not a JSON object")

// tokenClaims are a token's claims as the parser hands them over: the
// members of the JSON object, their values read only when asked for.
// (Decoding them into a jwt.MapClaims took twice as long as all else.)
type tokenClaims struct {
	parsed  bool
	members []member
	buf     [16]member // members' first array
}

// kind is the kind of a JSON value.
type kind uint8

const (
	kindString kind = iota + 1
	kindNumber
	kindBool
	kindNull
	kindObject
	kindArray
)

// member is a member of a JSON object.
type member struct {
	name string
	kind kind
	// text is a string's value, a number's or a boolean's text, an
	// object's or an array's JSON.
	text string
}

// UnmarshalJSON implements json.Unmarshaler: the parser calls it with the
// claims, which encoding/json has checked are valid JSON, before the
// signature is verified (the reading is linear, of MaxTokenSize bytes at
// most).
func (c *tokenClaims) UnmarshalJSON(data []byte) error {
	members, err := appendMembers(c.buf[:0], string(data))
	if err != nil {
		return err
	}
	c.members, c.parsed = members, true
	return nil
}

// get returns the member name.
func (c *tokenClaims) get(name string) (member, bool) {
	return lastMember(c.members, name)
}

// lastMember returns the member name of an object; the last one, when it
// is repeated, as encoding/json does.
func lastMember(members []member, name string) (member, bool) {
	for i := len(members) - 1; i >= 0; i-- {
		if members[i].name == name {
			return members[i], true
		}
	}
	return member{}, false
}

// str returns the string claim name, "" when the token has none, or an
// error when it is not a string.
func (c *tokenClaims) str(name string) (string, error) {
	m, ok := c.get(name)
	if !ok {
		return "", nil
	}
	if m.kind != kindString {
		return "", fmt.Errorf("%w: malformed: the %s claim is not a string", ErrInvalid, name)
	}
	return m.text, nil
}

// date returns the NumericDate claim name (seconds since the epoch, maybe
// with a fraction), whether the token has it, or an error when it is not
// a number.
func (c *tokenClaims) date(name string) (time.Time, bool, error) {
	m, ok := c.get(name)
	if !ok {
		return time.Time{}, false, nil
	}
	if m.kind != kindNumber {
		return time.Time{}, false, fmt.Errorf("%w: malformed: the %s claim is not a number", ErrInvalid, name)
	}
	n := json.Number(m.text)
	if i, err := n.Int64(); err == nil && i >= -maxDate && i <= maxDate {
		return time.Unix(i, 0), true, nil
	}
	f, err := n.Float64()
	if err != nil || f < -maxDate || f > maxDate {
		return time.Time{}, false, fmt.Errorf("%w: malformed: the %s claim is out of range", ErrInvalid, name)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}

// audience returns the "aud" claim, a string or a list of them; nil when
// the token has none.
func (c *tokenClaims) audience() ([]string, error) {
	m, ok := c.get("aud")
	switch {
	case !ok || m.kind == kindNull:
		return nil, nil
	case m.kind == kindString:
		return []string{m.text}, nil
	}
	if aud, ok := stringList(m); ok {
		return aud, nil
	}
	return nil, fmt.Errorf("%w: malformed: the aud claim is not a string or a list of strings", ErrInvalid)
}

// readGrants reads the "sse" claim, {"subscribe": [patterns], "publish":
// [patterns]}, into t. Other members are for later versions.
func (c *tokenClaims) readGrants(t *Token) error {
	m, ok := c.get("sse")
	if !ok {
		return nil
	}
	if m.kind != kindObject {
		return fmt.Errorf("%w: the sse claim is not an object", ErrInvalid)
	}
	var buf [4]member
	sse, err := appendMembers(buf[:0], m.text)
	if err != nil {
		return fmt.Errorf("%w: the sse claim: %w", ErrInvalid, err)
	}
	for _, g := range [...]struct {
		name string
		list *[]string
	}{{"subscribe", &t.Subscribe}, {"publish", &t.Publish}} {
		m, ok := lastMember(sse, g.name)
		if !ok || m.kind == kindNull { // null grants nothing, as a list left out does
			continue
		}
		patterns, ok := stringList(m)
		if !ok {
			return fmt.Errorf("%w: the sse claim's %s is not a list of strings", ErrInvalid, g.name)
		}
		*g.list = patterns
	}
	t.Grants = true
	return nil
}

// formatNumber returns the text of a JSON number, written out when it
// has an exponent: "1.7e9" is "1700000000".
func formatNumber(s string) string {
	if !strings.ContainsAny(s, "eE") {
		return s
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return s
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// GetExpirationTime implements jwt.Claims. The parser does not call the
// methods of jwt.Claims: Verify checks the claims itself.
func (c *tokenClaims) GetExpirationTime() (*jwt.NumericDate, error) { return c.numericDate("exp") }

// GetIssuedAt implements jwt.Claims.
func (c *tokenClaims) GetIssuedAt() (*jwt.NumericDate, error) { return c.numericDate("iat") }

// GetNotBefore implements jwt.Claims.
func (c *tokenClaims) GetNotBefore() (*jwt.NumericDate, error) { return c.numericDate("nbf") }

// GetIssuer implements jwt.Claims.
func (c *tokenClaims) GetIssuer() (string, error) { return c.str("iss") }

// GetSubject implements jwt.Claims.
func (c *tokenClaims) GetSubject() (string, error) { return c.str("sub") }

// GetAudience implements jwt.Claims.
func (c *tokenClaims) GetAudience() (jwt.ClaimStrings, error) { return c.audience() }

// numericDate returns the date claim name as jwt has it.
func (c *tokenClaims) numericDate(name string) (*jwt.NumericDate, error) {
	t, ok, err := c.date(name)
	if !ok {
		return nil, err
	}
	return jwt.NewNumericDate(t), nil
}
