package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/internal/caddyproc"
	"github.com/ssehub/caddy-sse/internal/ssetest"
)

// stuckSite is the site of the tests with clients that never read: a hub
// whose history is far larger than what socket buffers hold.
const stuckSite = `sse /events {
		buffer 512%s
	}
	sse_publish /publish {
		max_size 4MiB
	}`

// publishLarge publishes n events of 64 KiB to topic, 20 per request.
func publishLarge(t *testing.T, topic string, n int) {
	t.Helper()
	payload := strings.Repeat("x", 64<<10)
	for sent := 0; sent < n; {
		var body strings.Builder
		body.WriteString("[")
		for i := 0; i < 20 && sent < n; i++ {
			if i > 0 {
				body.WriteString(",")
			}
			fmt.Fprintf(&body, `{"topic":%q,"data":"%s"}`, topic, payload)
			sent++
		}
		body.WriteString("]")
		resp, err := http.Post(reloadBase+"/publish", "application/json", strings.NewReader(body.String()))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("publish: %d %s", resp.StatusCode, b)
		}
	}
}

// stuckClients opens two streams whose clients never read: one stuck in
// the replay of 200 events of 64 KiB (a bogus Last-Event-ID), one stuck
// writing 200 such events published live, fewer than its buffer.
func stuckClients(t *testing.T) {
	t.Helper()
	publishLarge(t, "big", 200)
	client := ssetest.NewSmallBufferClient(4096)
	ssetest.OpenT(t, client, reloadBase+"/events?topic=big", http.Header{"Last-Event-ID": {"bogus"}})
	ssetest.OpenT(t, client, reloadBase+"/events?topic=live", nil)
	publishLarge(t, "live", 200)
}

// TestStopDoesNotWaitForClientsThatNeverRead: SIGTERM ends Caddy within
// about a second even while streams are blocked on clients that do not
// read (they used to hold it for Caddy's one-minute write timeout), in the
// default mode as with hijack; a reader among them gets its final retry.
func TestStopDoesNotWaitForClientsThatNeverRead(t *testing.T) {
	for name, opt := range map[string]string{"net/http": "", "hijack": "\n\t\thijack"} {
		t.Run(name, func(t *testing.T) {
			c := caddyproc.Start(t, reloadConfig("", fmt.Sprintf(stuckSite, opt)), reloadAdmin)
			stuckClients(t)
			reader := ssetest.OpenT(t, ssetest.NewClient(), reloadBase+"/events?topic=calm", nil)
			if _, err := reader.Next(waitLimit); err != nil {
				t.Fatal(err)
			}
			took, err := c.Terminate(3 * time.Second)
			if err != nil {
				t.Fatalf("caddy did not exit within 3s of SIGTERM: %v", err)
			}
			t.Logf("caddy exited %v after SIGTERM", took)
			frames, err := reader.ReadAll(waitLimit)
			if err != nil || len(frames) == 0 || frames[len(frames)-1].Kind != ssetest.KindRetry {
				t.Fatalf("the reader's stream ended with %+v (%v), want a final retry", frames, err)
			}
		})
	}
}

// TestReloadDoesNotWaitForClientsThatNeverRead: a reload completes within
// about a second while streams are blocked on clients that do not read.
func TestReloadDoesNotWaitForClientsThatNeverRead(t *testing.T) {
	for name, opt := range map[string]string{"net/http": "", "hijack": "\n\t\thijack"} {
		t.Run(name, func(t *testing.T) {
			c := caddyproc.Start(t, reloadConfig("", fmt.Sprintf(stuckSite, opt)), reloadAdmin)
			stuckClients(t)
			start := time.Now()
			if err := c.Load(reloadConfig("", fmt.Sprintf(stuckSite, opt+"\n\t\tretry 5s"))); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("the reload took %v", d)
			}
			t.Logf("reloaded in %v", time.Since(start))
		})
	}
}

// trickle sends a request head with Content-Length 100000 on a raw
// connection, then one byte of body every 200 ms until the test ends: a
// client that holds its request open for hours.
func trickle(t *testing.T, head string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(reloadBase, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		close(done)
		conn.Close()
	})
	if _, err := fmt.Fprintf(conn, "%s HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n", head); err != nil {
		t.Fatal(err)
	}
	go func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			if _, err := conn.Write([]byte("x")); err != nil {
				return
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return conn
}

// answerOf reads the status line of the answer on conn within d.
func answerOf(t *testing.T, conn net.Conn, d time.Duration) string {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(d))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "no answer: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, b)
}

// TestTrickledBodiesHoldNoStop: a subscription that announces a body is
// refused at once, without its body being read (net/http would read it
// before answering, for as long as the client takes); a publish whose body
// trickles is answered 503 when Caddy stops, and SIGTERM ends Caddy within
// about a second, although both clients would keep their requests open
// for hours.
func TestTrickledBodiesHoldNoStop(t *testing.T) {
	c := caddyproc.Start(t, reloadConfig("", "sse /events\n\tsse_publish /publish"), reloadAdmin)
	sub := trickle(t, "GET /events?topic=t")
	if got := answerOf(t, sub, 2*time.Second); !strings.HasPrefix(got, "400 ") || !strings.Contains(got, "no body") {
		t.Fatalf("a subscription with a body: %s", got)
	}
	pub := trickle(t, "POST /publish?topic=t")
	time.Sleep(300 * time.Millisecond) // the handler is reading the body: nothing to await from outside
	took, err := c.Terminate(3 * time.Second)
	if err != nil {
		t.Fatalf("caddy did not exit within 3s of SIGTERM: %v", err)
	}
	t.Logf("caddy exited %v after SIGTERM", took)
	if got := answerOf(t, pub, time.Second); !strings.HasPrefix(got, "503 ") {
		t.Fatalf("the trickled publish: %s, want 503", got)
	}
}

// TestReloadEndsTrickledPublishes: a reload completes within about a
// second while a publish's body trickles, and the publisher is answered
// 503 (with Retry-After) to send it again.
func TestReloadEndsTrickledPublishes(t *testing.T) {
	c := caddyproc.Start(t, reloadConfig("", "sse /events\n\tsse_publish /publish"), reloadAdmin)
	pub := trickle(t, "POST /publish?topic=t")
	time.Sleep(300 * time.Millisecond) // the handler is reading the body: nothing to await from outside
	start := time.Now()
	if err := c.Load(reloadConfig("", "sse /events\n\tsse_publish /publish {\n\t\tmax_size 2MiB\n\t}")); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the reload took %v", d)
	}
	if got := answerOf(t, pub, 3*time.Second); !strings.HasPrefix(got, "503 ") {
		t.Fatalf("the trickled publish: %s, want 503", got)
	}
	t.Logf("reloaded in %v; the publisher was answered 503", time.Since(start))
}

// historyEvents returns the default hub's retained events, from the admin
// API.
func historyEvents(t *testing.T, c *caddyproc.Caddy) int {
	t.Helper()
	resp, err := c.Admin(http.MethodGet, "/sse/hubs/default", "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var hub struct {
		History struct {
			Events int `json:"events"`
		} `json:"history"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&hub); err != nil {
		t.Fatal(err)
	}
	return hub.History.Events
}

// TestReloadFailingAtStartChangesNothing: a config that would shrink the
// hub's history but fails when its apps start (a port in use) leaves the
// running hub's history alone. Caddy starts apps in map order, so the sse
// app used to apply the new limits before the HTTP app failed some of the
// time: the reload is tried several times.
func TestReloadFailingAtStartChangesNothing(t *testing.T) {
	good := reloadConfig("", "sse /events\n\tsse_publish /publish")
	c := caddyproc.Start(t, good, reloadAdmin)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for i := range 8 {
		if _, err := publishWith(client, "/publish", fmt.Sprint("event ", i)); err != nil {
			t.Fatal(err)
		}
	}
	taken, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := taken.Addr().(*net.TCPAddr).Port
	bad := reloadConfig("sse {\n\t\thub default {\n\t\t\thistory 1\n\t\t}\n\t}",
		"sse /events\n\tsse_publish /publish\n}\nhttp://localhost:"+fmt.Sprint(port)+" {\n\trespond ok")
	for range 6 {
		err := c.Load(bad)
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("loading a config on a port in use: %v", err)
		}
		if n := historyEvents(t, c); n != 8 {
			t.Fatalf("the failed reload changed the running hub: %d events retained, want 8", n)
		}
	}
}
