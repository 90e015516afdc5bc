//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// caddyProc is a Caddy process started by the tool, in a directory of
// its own (its home, data and config directory, its log and, for HTTPS,
// its certificate storage).
type caddyProc struct {
	cfg     *config
	cmd     *exec.Cmd
	dir     string
	log     *os.File
	exited  chan struct{}
	admin   *http.Client   // for the heap profile, whose GC may take long
	poll    *http.Client   // for the hub's figures
	roots   *x509.CertPool // the root of its local CA, once an HTTPS site runs
	storage string
}

// caddyfile is the config of an attack's Caddy: a plain HTTP site, an
// HTTPS one with the local CA if asked, the default hub's options, and
// with variant a slightly different route (for a reload).
func caddyfile(cfg *config, a attack, storage string, variant bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{\n\tadmin 127.0.0.1:%d\n\thttp_port %d\n\thttps_port %d\n\tpersist_config off\n",
		cfg.adminPort, cfg.httpPort, cfg.httpsPort)
	if a.tls {
		fmt.Fprintf(&b, "\tlocal_certs\n\tskip_install_trust\n\tauto_https disable_redirects\n\tstorage file_system %s\n", storage)
	}
	if a.hub != "" {
		fmt.Fprintf(&b, "\tsse {\n\t\thub default {\n\t\t\t%s\n\t\t}\n\t}\n", a.hub)
	}
	b.WriteString("}\n\n")
	route := "sse /events"
	if variant {
		route = "sse /events {\n\t\tretry 5s\n\t}"
	}
	fmt.Fprintf(&b, "http://127.0.0.1:%d {\n\t%s\n\tsse_publish /publish\n}\n", cfg.httpPort, route)
	if a.tls {
		fmt.Fprintf(&b, "\nhttps://127.0.0.1:%d {\n\ttls internal\n\t%s\n\tsse_publish /publish\n}\n", cfg.httpsPort, route)
	}
	return b.String()
}

// checkPorts fails if a port of Caddy is taken: Caddy listens with
// SO_REUSEPORT and would start anyway, sharing the connections with
// whatever listens there. A listener without SO_REUSEPORT cannot be
// opened on such a port.
func checkPorts(cfg *config, udp bool) error {
	for _, p := range []int{cfg.adminPort, cfg.httpPort, cfg.httpsPort} {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			return fmt.Errorf("port %d is in use: %w", p, err)
		}
		l.Close()
	}
	if udp {
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", cfg.httpsPort))
		if err != nil {
			return fmt.Errorf("udp port %d is in use: %w", cfg.httpsPort, err)
		}
		pc.Close()
	}
	return nil
}

// startCaddy starts Caddy on the attack's config, pinned to --caddy-cpu,
// and returns once its admin API and sites answer.
func startCaddy(ctx context.Context, cfg *config, a attack) (*caddyProc, error) {
	if err := checkPorts(cfg, a.tls); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "ssehostile-")
	if err != nil {
		return nil, fmt.Errorf("making caddy's directory: %w", err)
	}
	c := &caddyProc{cfg: cfg, dir: dir, exited: make(chan struct{}), storage: filepath.Join(dir, "storage"),
		admin: &http.Client{Timeout: 60 * time.Second}, poll: &http.Client{Timeout: 5 * time.Second}}
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(caddyfile(cfg, a, c.storage, false)), 0o600); err != nil {
		return nil, fmt.Errorf("writing the caddyfile: %w", err)
	}
	if c.log, err = os.Create(filepath.Join(dir, "caddy.log")); err != nil {
		return nil, fmt.Errorf("creating caddy's log: %w", err)
	}
	if err := c.spawn(file); err != nil {
		c.cleanup()
		return nil, err
	}
	if err := c.waitReady(ctx, a.tls); err != nil {
		c.kill()
		fmt.Fprintf(cfg.stderr, "caddy's log:\n%s\n", c.logTail(30))
		c.cleanup()
		return nil, err
	}
	return c, nil
}

// spawn runs `caddy run` on file, through taskset when Caddy is pinned.
func (c *caddyProc) spawn(file string) error {
	args := []string{c.cfg.caddy, "run", "--config", file, "--adapter", "caddyfile"}
	if c.cfg.caddyCPU != "" {
		args = append([]string{"taskset", "-c", c.cfg.caddyCPU}, args...)
	}
	c.cmd = exec.Command(args[0], args[1:]...)
	c.cmd.Dir = c.dir
	c.cmd.Env = append(os.Environ(), "HOME="+c.dir, "XDG_DATA_HOME="+c.dir, "XDG_CONFIG_HOME="+c.dir)
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if err := c.cmd.Start(); err != nil {
		return fmt.Errorf("starting caddy: %w", err)
	}
	go func() {
		_ = c.cmd.Wait()
		close(c.exited)
	}()
	return nil
}

// waitReady waits up to 30 s for the admin API, the plain site and, with
// tls, the local CA and the HTTPS site's certificate.
func (c *caddyProc) waitReady(ctx context.Context, tls bool) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-c.exited:
			return errors.New("caddy exited at start")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if c.get("/config/") != nil || !answers(c.siteURL("/")) {
			continue
		}
		if !tls || c.tlsReady() {
			return nil
		}
	}
	return errors.New("caddy did not get ready within 30s")
}

// answers says whether url answers at all.
func answers(url string) bool {
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return true
}

// tlsReady loads the local CA's root and says whether the HTTPS site
// serves a certificate it signed.
func (c *caddyProc) tlsReady() bool {
	pem, err := os.ReadFile(filepath.Join(c.storage, "pki", "authorities", "local", "root.crt"))
	if err != nil {
		return false
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return false
	}
	d := &net.Dialer{Timeout: 2 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", c.httpsAddr(), &tls.Config{RootCAs: pool})
	if err != nil {
		return false
	}
	conn.Close()
	c.roots = pool
	return true
}

// siteURL is path on the plain HTTP site.
func (c *caddyProc) siteURL(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", c.cfg.httpPort, path)
}

// httpAddr and httpsAddr are the sites' addresses.
func (c *caddyProc) httpAddr() string  { return fmt.Sprintf("127.0.0.1:%d", c.cfg.httpPort) }
func (c *caddyProc) httpsAddr() string { return fmt.Sprintf("127.0.0.1:%d", c.cfg.httpsPort) }

// adminURL is path on the admin API.
func (c *caddyProc) adminURL(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", c.cfg.adminPort, path)
}

// get fetches path from the admin API and discards its answer.
func (c *caddyProc) get(path string) error {
	_, err := c.readWith(c.poll, path)
	return err
}

// read fetches path from the admin API.
func (c *caddyProc) read(path string) ([]byte, error) { return c.readWith(c.admin, path) }

// readWith fetches path from the admin API with client.
func (c *caddyProc) readWith(client *http.Client, path string) ([]byte, error) {
	resp, err := client.Get(c.adminURL(path))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: status %d", path, resp.StatusCode)
	}
	return body, nil
}

// pid is the process id of Caddy (taskset execs it: the same process).
func (c *caddyProc) pid() int { return c.cmd.Process.Pid }

// rssKiB returns Caddy's VmRSS.
func (c *caddyProc) rssKiB() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.pid()))
	if err != nil {
		return 0, fmt.Errorf("reading caddy's status: %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, errors.New("no VmRSS in caddy's status")
}

// tcpMemKiB returns the memory of every TCP socket of the machine, from
// /proc/net/sockstat (pages): mostly the send buffers a Caddy fills for
// clients that do not read, which its RSS does not show. It counts every
// process's sockets.
func tcpMemKiB() (int64, error) {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return 0, fmt.Errorf("reading the sockets' memory: %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "TCP:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		for i := 0; i+1 < len(f); i += 2 {
			if f[i] == "mem" {
				pages, err := strconv.ParseInt(f[i+1], 10, 64)
				return pages * int64(os.Getpagesize()) / 1024, err
			}
		}
	}
	return 0, errors.New("no TCP mem in /proc/net/sockstat")
}

// clockTick is the unit of the CPU times in /proc/<pid>/stat: USER_HZ,
// 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// cpuTime returns the CPU time Caddy used so far (user and system, all
// threads).
func (c *caddyProc) cpuTime() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.pid()))
	if err != nil {
		return 0, fmt.Errorf("reading caddy's cpu time: %w", err)
	}
	// the command's name, in parentheses, may hold spaces: fields are
	// counted after its closing parenthesis, which ends field 2
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc/<pid>/stat")
	}
	f := bytes.Fields(b[i+1:])
	const utime, stime = 14 - 3, 15 - 3
	if len(f) <= stime {
		return 0, errors.New("malformed /proc/<pid>/stat")
	}
	u, err1 := strconv.ParseInt(string(f[utime]), 10, 64)
	s, err2 := strconv.ParseInt(string(f[stime]), 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("malformed /proc/<pid>/stat: %w", err)
	}
	return time.Duration(u+s) * clockTick, nil
}

// heapInuseKiB forces a GC in Caddy (the heap profile's gc=1) and returns
// its heap in use from the profile's runtime.MemStats lines.
func (c *caddyProc) heapInuseKiB() (int64, error) {
	body, err := c.read("/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return 0, fmt.Errorf("reading the heap profile: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "# HeapInuse = "); ok {
			n, err := strconv.ParseInt(rest, 10, 64)
			return n / 1024, err
		}
	}
	return 0, errors.New("no HeapInuse in the heap profile")
}

// hub is what the admin API says of the default hub.
type hub struct {
	Subscribers int `json:"subscribers"`
}

// subscribers returns the default hub's subscribers.
func (c *caddyProc) subscribers() (int, error) {
	body, err := c.readWith(c.poll, "/sse/hubs/default")
	if err != nil {
		return 0, err
	}
	var h hub
	if err := json.Unmarshal(body, &h); err != nil {
		return 0, fmt.Errorf("decoding the hub's figures: %w", err)
	}
	return h.Subscribers, nil
}

// waitSubscribers waits up to timeout until cond holds of the hub's
// subscribers, polling every 100 ms; it returns the last count.
func (c *caddyProc) waitSubscribers(ctx context.Context, timeout time.Duration, cond func(int) bool) (int, error) {
	deadline := time.Now().Add(timeout)
	n := -1
	for {
		got, err := c.subscribers()
		if err == nil {
			n = got
			if cond(n) {
				return n, nil
			}
		}
		if time.Now().After(deadline) {
			return n, fmt.Errorf("waiting for the hub's subscribers (last %d): timed out after %v", n, timeout)
		}
		select {
		case <-ctx.Done():
			return n, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// load replaces the config through the admin API's /load.
func (c *caddyProc) load(ctx context.Context, caddyfile string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.adminURL("/load"), strings.NewReader(caddyfile))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("posting /load: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/load: status %d: %s", resp.StatusCode, body)
	}
	return nil
}

// terminate sends SIGTERM and waits up to limit for Caddy to exit. It
// returns the time the exit took, and false if Caddy was still running
// at the limit (it is then killed).
func (c *caddyProc) terminate(limit time.Duration) (time.Duration, bool) {
	start := time.Now()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return 0, false
	}
	select {
	case <-c.exited:
		return time.Since(start), true
	case <-time.After(limit):
		c.kill()
		return time.Since(start), false
	}
}

// kill ends Caddy with SIGKILL, by its PID, and waits for it (10 s at most).
func (c *caddyProc) kill() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	select {
	case <-c.exited:
		return
	default:
	}
	_ = c.cmd.Process.Kill()
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
	}
}

// logTail returns the last lines of Caddy's log.
func (c *caddyProc) logTail(lines int) string {
	b, err := os.ReadFile(c.log.Name())
	if err != nil {
		return err.Error()
	}
	parts := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// cleanup removes Caddy's directory once it has exited.
func (c *caddyProc) cleanup() {
	c.kill()
	if c.log != nil {
		c.log.Close()
	}
	os.RemoveAll(c.dir)
}
