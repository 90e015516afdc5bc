package caddysse

import (
	"bytes"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/ssehub/caddy-sse/transport"
)

// part is a field of a multipart test body; file names a file part.
type part struct{ name, value, file string }

// multipartBody builds a multipart/form-data body and its content type.
func multipartBody(t testing.TB, parts ...part) (string, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		var err error
		if p.file != "" {
			w, ferr := mw.CreateFormFile(p.name, p.file)
			if ferr == nil {
				_, err = w.Write([]byte(p.value))
			} else {
				err = ferr
			}
		} else {
			err = mw.WriteField(p.name, p.value)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), buf.String()
}

// decodeTestRequest decodes a publish request as servePublish does, with
// a body limit of maxSize.
func decodeTestRequest(target, ctype, body string, maxSize int64) ([]transport.Message, bool, error) {
	r := httptest.NewRequest(http.MethodPost, target, strings.NewReader(body))
	if ctype != "" {
		r.Header.Set("Content-Type", ctype)
	}
	r.Body = http.MaxBytesReader(httptest.NewRecorder(), r.Body, maxSize)
	return decodePublish(r, nil)
}

// msg is a message as the decode tests expect it.
func msg(typ, data string, retry int64, topics ...string) transport.Message {
	return transport.Message{Topics: topics, Type: typ, Data: data, Retry: retry}
}

// jsonArray returns a JSON array of n copies of elem.
func jsonArray(n int, elem string) string {
	return "[" + strings.TrimSuffix(strings.Repeat(elem+",", n), ",") + "]"
}

const formType = "application/x-www-form-urlencoded"

func TestDecodeAccepts(t *testing.T) {
	mpType, mpBody := multipartBody(t, part{name: "topic", value: "a"}, part{name: "topic", value: "b"},
		part{name: "type", value: "t"}, part{name: "data", value: "x\ny"}, part{name: "retry", value: "100"})
	fileType, fileBody := multipartBody(t, part{name: "topic", value: "a"}, part{name: "data", value: "from a file", file: "d.txt"})
	bothType, bothBody := multipartBody(t, part{name: "data", value: "the file", file: "d.txt"}, part{name: "data", value: "the field"})
	manyEvents := make([]transport.Message, maxArrayEvents)
	for i := range manyEvents {
		manyEvents[i] = msg("", "", -1, "a")
	}
	cases := []struct {
		name, target, ctype, body string
		array                     bool
		want                      []transport.Message
	}{
		{"form", "/", formType, "topic=a&event=e&data=d+1&retry=1500", false, []transport.Message{msg("e", "d 1", 1500, "a")}},
		{"form type alias", "/", formType, "topic=a&type=t", false, []transport.Message{msg("t", "", -1, "a")}},
		{"form event before type", "/", formType, "type=t&event=e", false, []transport.Message{msg("e", "", -1, "default")}},
		{"form empty event falls back to type", "/", formType, "event=&type=t", false, []transport.Message{msg("t", "", -1, "default")}},
		{"form empty retry is none", "/", formType, "retry=&data=x", false, []transport.Message{msg("", "x", -1, "default")}},
		{"form retry bounds inclusive", "/?retry=86400000", formType, "retry=100", false, []transport.Message{msg("", "", 100, "default")}},
		{"form retry at most 24 h", "/", formType, "retry=86400000", false, []transport.Message{msg("", "", 86400000, "default")}},
		{"form topics deduplicated", "/", formType, "topic=a&topic=b&topic=a", false, []transport.Message{msg("", "", -1, "a", "b")}},
		{"form body before query", "/?topic=q&data=query", formType, "data=body", false, []transport.Message{msg("", "body", -1, "q")}},
		{"form unknown query parameters ignored", "/?utm_source=x&_=123", formType, "topic=a", false, []transport.Message{msg("", "", -1, "a")}},
		{"form empty body", "/?topic=a", formType, "", false, []transport.Message{msg("", "", -1, "a")}},
		{"multipart", "/", mpType, mpBody, false, []transport.Message{msg("t", "x\ny", 100, "a", "b")}},
		{"multipart data file", "/", fileType, fileBody, false, []transport.Message{msg("", "from a file", -1, "a")}},
		{"multipart data field over file", "/", bothType, bothBody, false, []transport.Message{msg("", "the field", -1, "default")}},
		{"multipart query topic", "/?topic=q&ignored=1", fileType, fileBody, false, []transport.Message{msg("", "from a file", -1, "a", "q")}},
		{"json", "/", "application/json", `{"topic":"a","event":"e","data":"x","retry":250}`, false, []transport.Message{msg("e", "x", 250, "a")}},
		{"json charset", "/", "application/json; charset=utf-8", `{"topic":["a","b"],"data":{"k": [1, 2]}}`, false, []transport.Message{msg("", `{"k":[1,2]}`, -1, "a", "b")}},
		{"json as text/json", "/", "text/json", `{"topic":"a","data":"x"}`, false, []transport.Message{msg("", "x", -1, "a")}},
		{"json +json type", "/", "application/vnd.api+json", `{"type":"t","data":42}`, false, []transport.Message{msg("t", "42", -1, "default")}},
		{"json null data is the string null", "/", "application/json", `{"data":null}`, false, []transport.Message{msg("", "null", -1, "default")}},
		{"json nulls are absent", "/", "application/json", `{"topic":null,"retry":null,"event":null}`, false, []transport.Message{msg("", "", -1, "default")}},
		{"json empty object", "/", "application/json", ` {} `, false, []transport.Message{msg("", "", -1, "default")}},
		{"json array", "/", "application/json", ` [{"topic":"a","data":"1"}, {"topic":"b","data":"2","retry":100}] `, true,
			[]transport.Message{msg("", "1", -1, "a"), msg("", "2", 100, "b")}},
		{"json array of 1000", "/", "application/json", jsonArray(maxArrayEvents, `{"topic":"a"}`), true, manyEvents},
		{"raw text", "/?topic=a&event=e&retry=100", "text/plain", "line 1\nline 2", false, []transport.Message{msg("e", "line 1\nline 2", 100, "a")}},
		{"raw without content type", "/?topic=a", "", "hello world", false, []transport.Message{msg("", "hello world", -1, "a")}},
		{"raw ignores unknown query parameters", "/?topic=a&x=1", "application/octet-stream", "x", false, []transport.Message{msg("", "x", -1, "a")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, array, err := decodeTestRequest(c.target, c.ctype, c.body, DefaultMaxSize)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if array != c.array {
				t.Fatalf("array %v, want %v", array, c.array)
			}
			if !slices.EqualFunc(got, c.want, func(a, b transport.Message) bool {
				return slices.Equal(a.Topics, b.Topics) && a.Type == b.Type && a.Data == b.Data && a.Retry == b.Retry
			}) {
				if len(got) > 3 {
					got = got[:3]
				}
				t.Fatalf("got %+v, want %+v", got, c.want[:min(3, len(c.want))])
			}
		})
	}
}

func TestDecodeRefusals(t *testing.T) {
	mp := func(parts ...part) [2]string {
		ctype, body := multipartBody(t, parts...)
		return [2]string{ctype, body}
	}
	unknownMP := mp(part{name: "topic", value: "a"}, part{name: "message", value: "hi"})
	unknownFileMP := mp(part{name: "attachment", value: "x", file: "x.txt"})
	topicFileMP := mp(part{name: "topic", value: "a", file: "t.txt"})
	idMP := mp(part{name: "id", value: "5"})
	retryMP := mp(part{name: "retry", value: "0"})
	bigMP := mp(part{name: "data", value: strings.Repeat("x", 100), file: "big.txt"})
	const accepted = "topic, data, event (or type) and retry"
	const retryRange = "from 100 to 86400000"
	json := "application/json"
	cases := []struct {
		name, target, ctype, body string
		status                    int
		errContains               []string
	}{
		{"form unknown field", "/", formType, "topic=a&message=hi", 400, []string{`"message" is not accepted`, accepted}},
		{"form unknown field, the first named", "/", formType, "b=1&a=2", 400, []string{`"b"`}},
		{"form bare text", "/", formType, "hello world", 400, []string{`"hello world" is not accepted`, accepted, "Content-Type: text/plain"}},
		{"form empty field name", "/", formType, "=x", 400, []string{`"" is not accepted`}},
		{"form that is JSON", "/", formType, `{"topic":"a","data":"x"}`, 400, []string{"Content-Type: application/json"}},
		{"form that is JSON with = and %", "/", formType, `{"data":"a=b 100%"}`, 400, []string{"Content-Type: application/json"}},
		{"form that is a JSON array", "/", formType, "\n" + `[{"topic":"a"}]`, 400, []string{"Content-Type: application/json"}},
		{"form with an escaped JSON key", "/", formType, `%7B%22topic%22%3A%22a%22%7D`, 400, []string{"Content-Type: application/json"}},
		{"form id", "/", formType, "id=5&message=x", 400, []string{"ids are assigned by the hub"}},
		{"form retry 0", "/", formType, "retry=0", 400, []string{`retry "0" is not allowed`, retryRange}},
		{"form retry 99", "/", formType, "retry=99", 400, []string{retryRange}},
		{"form retry over 24 h", "/", formType, "retry=86400001", 400, []string{retryRange}},
		{"form retry max int64", "/", formType, "retry=9223372036854775807", 400, []string{retryRange}},
		{"form retry beyond int64", "/", formType, "retry=99999999999999999999", 400, []string{retryRange}},
		{"form retry negative", "/", formType, "retry=-1", 400, []string{retryRange}},
		{"form retry with unit", "/", formType, "retry=5s", 400, []string{retryRange}},
		{"query retry out of range", "/?retry=0", formType, "topic=a", 400, []string{retryRange}},
		{"form bad escape", "/", formType, "data=%zz", 400, []string{"invalid URL escape"}},
		{"form semicolon", "/", formType, "topic=a;data=x", 400, []string{"semicolon"}},
		{"multipart unknown field", "/", unknownMP[0], unknownMP[1], 400, []string{`"message" is not accepted`, accepted}},
		{"multipart unknown file", "/", unknownFileMP[0], unknownFileMP[1], 400, []string{`"attachment" is not accepted`}},
		{"multipart topic file", "/", topicFileMP[0], topicFileMP[1], 400, []string{`"topic" is a file; only data may be one`}},
		{"multipart id", "/", idMP[0], idMP[1], 400, []string{"ids are assigned by the hub"}},
		{"multipart retry 0", "/", retryMP[0], retryMP[1], 400, []string{retryRange}},
		{"multipart without boundary", "/", "multipart/form-data", "x", 400, []string{"multipart"}},
		{"multipart truncated", "/", unknownMP[0], unknownMP[1][:len(unknownMP[1])-10], 400, []string{"multipart"}},
		{"raw with data in the query", "/?topic=a&data=x", "text/plain", "body", 400, []string{"text/plain is the data", "remove data from the query string"}},
		{"raw without type with data in the query", "/?data=x", "", "", 400, []string{"without a Content-Type is the data"}},
		{"raw retry out of range", "/?topic=a&retry=9223372036854775807", "text/plain", "x", 400, []string{retryRange}},
		{"raw id", "/?id=1", "text/plain", "x", 400, []string{"ids are assigned by the hub"}},
		{"json null", "/", json, ` null `, 400, []string{"JSON body is null"}},
		{"json that is a form", "/", json, `topic=a&data=x`, 400, []string{"sent as JSON but is not a JSON object", "application/x-www-form-urlencoded"}},
		{"json empty topic array", "/", json, `{"topic":[],"data":"x"}`, 400, []string{"topic is an empty array"}},
		{"json empty topic array in an array", "/", json, `[{"topic":"a"},{"topic":[]}]`, 400, []string{"event 1: topic is an empty array"}},
		{"json array with null", "/", json, `[{"topic":"a"}, null]`, 400, []string{"event 1 is null"}},
		{"json empty array", "/", json, `[ ]`, 400, []string{"no event"}},
		{"json array of 1001", "/", json, jsonArray(maxArrayEvents+1, `{}`), 400, []string{"more than 1000 events", "at most 1000 per request"}},
		{"json string", "/", json, `"hello"`, 400, []string{"not a JSON object"}},
		{"json number in an array", "/", json, `[{}, 5]`, 400, []string{"event 1: not a JSON object"}},
		{"json array of arrays", "/", json, `[[]]`, 400, []string{"event 0: not a JSON object"}},
		{"json event not a string", "/", json, `{"event":5}`, 400, []string{"event must be a string"}},
		{"json unknown field", "/", json, `{"topics":["a"]}`, 400, []string{`unknown field "topics"`, accepted}},
		{"json unknown field in an array", "/", json, `[{"dta":"x"}]`, 400, []string{`event 0: unknown field "dta"`}},
		{"json retry 0", "/", json, `{"retry":0}`, 400, []string{"retry 0 is not allowed", retryRange}},
		{"json retry max int64", "/", json, `{"retry":9223372036854775807}`, 400, []string{retryRange}},
		{"json retry exponent", "/", json, `{"retry":1e3}`, 400, []string{retryRange}},
		{"json retry string", "/", json, `{"retry":"1000"}`, 400, []string{retryRange}},
		{"json truncated", "/", json, `{"topic":"a",`, 400, []string{"malformed JSON", "ends too soon"}},
		{"json truncated array", "/", json, `[{"topic":"a"}`, 400, []string{"malformed JSON", "ends too soon"}},
		{"json missing comma", "/", json, `[{} {}]`, 400, []string{"malformed JSON"}},
		{"json trailing data", "/", json, `{} {}`, 400, []string{"malformed JSON", "after the JSON value"}},
		{"json trailing data after an array", "/", json, `[{}] x`, 400, []string{"malformed JSON", "after the JSON value"}},
		{"json empty body", "/", json, ``, 400, []string{"malformed JSON"}},
		{"json not UTF-8", "/", json, "{\"data\":\"\xff\"}", 400, []string{"not valid UTF-8"}},
		{"json id", "/", json, `{"id":"1"}`, 400, []string{"ids are assigned by the hub"}},
		{"over the size limit", "/?topic=a", "text/plain", strings.Repeat("x", 101), 413, []string{"larger than the 100 bytes allowed"}},
		{"form over the size limit", "/", formType, "data=" + strings.Repeat("x", 100), 413, []string{"larger than"}},
		{"json over the size limit", "/", json, `{"data":"` + strings.Repeat("x", 100) + `"}`, 413, []string{"larger than"}},
		{"multipart over the size limit", "/", bigMP[0], bigMP[1], 413, []string{"larger than"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			maxSize := int64(DefaultMaxSize)
			if c.status == http.StatusRequestEntityTooLarge {
				maxSize = 100
			}
			msgs, _, err := decodeTestRequest(c.target, c.ctype, c.body, maxSize)
			if err == nil {
				t.Fatalf("accepted: %+v", msgs)
			}
			re := asRequestError(err)
			if re.status != c.status {
				t.Fatalf("status %d (%s), want %d", re.status, re.msg, c.status)
			}
			for _, want := range c.errContains {
				if !strings.Contains(re.msg, want) {
					t.Fatalf("error %q, want one containing %q", re.msg, want)
				}
			}
		})
	}
}

// hugeArray is a JSON array of n empty objects.
func hugeArray(n int) []byte {
	return []byte(jsonArray(n, "{}"))
}

// TestHugeArrayCostIsBounded checks that an array far beyond the limit
// (340,000 events in 1 MiB, which once took 5 s and 21 MB to answer) is
// refused having decoded no more than the limit allows: it allocates
// about as much as an array just over the limit does.
func TestHugeArrayCostIsBounded(t *testing.T) {
	allocated := func(body []byte) uint64 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, _, err := jsonDrafts(body)
		runtime.ReadMemStats(&after)
		if err == nil || !strings.Contains(err.Error(), "more than 1000 events") {
			t.Fatalf("a body of %d bytes: %v", len(body), err)
		}
		return after.TotalAlloc - before.TotalAlloc
	}
	huge := hugeArray(340_000)
	small := allocated(hugeArray(maxArrayEvents + 1))
	big := allocated(huge)
	t.Logf("%d bytes allocated for 1001 events, %d for %d bytes of %d events", small, big, len(huge), 340_000)
	if big > 2*small+64<<10 || big > 1<<20 {
		t.Fatalf("refusing %d events allocated %d bytes, %d for 1001: the decoder went past the limit", 340_000, big, small)
	}
}

// BenchmarkDecodeHugeArray measures the refusal of a 1 MiB array of
// 340,000 events.
func BenchmarkDecodeHugeArray(b *testing.B) {
	body := hugeArray(340_000)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := jsonDrafts(body); err == nil {
			b.Fatal("accepted")
		}
	}
}

func TestUnknownFieldErrorsNameTheField(t *testing.T) {
	// every field a publish form accepts is accepted, and nothing else
	for _, name := range []string{"topic", "data", "event", "type", "retry"} {
		if _, _, err := decodeTestRequest("/", formType, name+"=100", DefaultMaxSize); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, name := range []string{"Topic", "topics", "message", "msg", "id_", "event "} {
		_, _, err := decodeTestRequest("/", formType, name+"=1", DefaultMaxSize)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", name)) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
