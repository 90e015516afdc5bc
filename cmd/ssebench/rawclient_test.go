//go:build linux

package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestRawClient(t *testing.T) {
	var requests int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests++
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "text/plain" || r.Header.Get("X-Test") != "1" {
			http.Error(w, "bad request "+r.Method, http.StatusBadRequest)
			return
		}
		switch r.URL.Path {
		case "/length":
			w.Header().Set("Content-Length", "5")
			_, _ = w.Write([]byte("hello"))
		case "/chunked":
			for range 3 {
				_, _ = w.Write([]byte(strings.Repeat("c", 5000)))
				_ = http.NewResponseController(w).Flush()
			}
		case "/close":
			w.Header().Set("Connection", "close")
			_, _ = w.Write(body)
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	host, _, _ := splitURL(srv.URL)
	c := newRawClient(dialAddr(host), 5*time.Second)
	defer c.close()
	for _, tc := range []struct {
		path   string
		status int
		body   string
		kept   bool
	}{
		{"/length", 200, "hello", true},
		{"/chunked", 200, "", true},
		{"/empty", 204, "", true},
		{"/close", 200, "payload", false},
		{"/length", 200, "hello", true},
		{"/missing", 404, "404 page not found", true},
	} {
		req := appendRequest(nil, tc.path, host, "text/plain", "X-Test: 1\r\n", []byte("payload"))
		status, body, err := c.do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		if status != tc.status || (tc.body != "" && !strings.Contains(string(body), tc.body)) {
			t.Errorf("%s: %d %q, want %d %q", tc.path, status, body, tc.status, tc.body)
		}
		if (c.conn != nil) != tc.kept {
			t.Errorf("%s: connection kept %v, want %v", tc.path, c.conn != nil, tc.kept)
		}
	}
	if requests != 6 {
		t.Errorf("%d requests reached the server", requests)
	}
}

func TestAnswerHead(t *testing.T) {
	h, err := parseAnswerHead([]byte("HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\n"))
	if err != nil || h.keepAlive || h.contentLength != 12 {
		t.Errorf("HTTP/1.0: %+v %v", h, err)
	}
	h, err = parseAnswerHead([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"))
	if err != nil || !h.keepAlive || !h.chunked || h.contentLength != -1 {
		t.Errorf("chunked: %+v %v", h, err)
	}
	if _, err := parseAnswerHead([]byte("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n")); err == nil {
		t.Error("a negative length was accepted")
	}
}
