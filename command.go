package caddysse

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "sse-publish",
		Usage: "[--topic <topic>]... [--event <type>] [--hub <name>] [--json | --stream [--ndjson]] [--address <interface>] [--config <path> [--adapter <name>]] [<data>]",
		Short: "Publishes Server-Sent Events through the admin API",
		Long: `
Publishes one event to a hub of the running Caddy instance, through the
admin API endpoint POST /sse/hubs/<hub>/publish, and prints its id.

The data is the argument, or else standard input (without its final line
ending). With --json, the data is a JSON value: a string is sent as the
string itself, anything else in its compact JSON form. Without --topic,
the event goes to the topic "default"; --topic may be repeated.

With --stream, standard input is a stream of events, in the
text/event-stream format (blocks of "data: ..." lines, each ended by a
blank line), or with --ndjson one JSON object a line ({"data": ...,
"event": ..., "topic": ...}). Each event is published as soon as it is
complete, until standard input ends; the command then prints the answer:
{"count": <events>, "first_id": ..., "last_id": ...}. --topic and
--event apply to the events that name none.

The admin address is --address if given, else the one in the --config
file, else the default (localhost:2019), as for 'caddy stop'.

A refused event (an invalid topic or event type, an unknown hub...) makes
the command exit with status 1 and the server's message (for a stream,
with the number of events published before it).
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().StringArrayP("topic", "t", nil, "Topic to publish to (repeatable)")
			cmd.Flags().StringP("event", "e", "", "Event type (default: message)")
			cmd.Flags().String("hub", DefaultHubName, "Hub to publish to")
			cmd.Flags().Bool("json", false, "The data is a JSON value")
			cmd.Flags().Bool("stream", false, "Standard input is a stream of events (text/event-stream), each published as it is complete")
			cmd.Flags().Bool("ndjson", false, "With --stream: one JSON event a line (application/x-ndjson)")
			cmd.Flags().String("address", "", "The address of the admin API, if not the default")
			cmd.Flags().StringP("config", "c", "", "Configuration file to read the admin address from, if --address is not used")
			cmd.Flags().StringP("adapter", "a", "", "Name of the config adapter (when --config is used)")
			cmd.Args = cobra.MaximumNArgs(1)
			cmd.RunE = plainErrors(cmdPublish)
		},
	})
}

// plainErrors adapts a command function to cobra as
// caddycmd.WrapCommandFuncForCobra does, but prints its error as a plain
// line on standard error, not as a log line: these commands are for shell
// scripts, whose users read (and grep) the message. The process exits
// with the command's status, at least 1 after an error.
func plainErrors(f caddycmd.CommandFunc) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		status, err := f(caddycmd.Flags{FlagSet: cmd.Flags()})
		if err == nil && status == 0 {
			return nil
		}
		cmd.SilenceErrors, cmd.SilenceUsage = true, true
		if err != nil {
			fmt.Fprintf(cmd.ErrOrStderr(), "caddy %s: %v\n", cmd.Name(), err)
		}
		os.Exit(max(status, 1))
		return nil
	}
}

// cliMessage is the JSON publish request the command sends.
type cliMessage struct {
	Topic []string        `json:"topic,omitempty"`
	Event string          `json:"event,omitempty"`
	Data  json.RawMessage `json:"data"`
}

// cmdPublish implements caddy sse-publish.
func cmdPublish(fl caddycmd.Flags) (int, error) {
	if fl.Bool("stream") {
		return cmdPublishStream(fl)
	}
	if fl.Bool("ndjson") {
		return caddy.ExitCodeFailedStartup, errors.New("--ndjson is a format of --stream")
	}
	body, err := cliRequestBody(fl)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	hub := fl.String("hub")
	adminAddr, err := caddycmd.DetermineAdminAPIAddress(fl.String("address"), nil, fl.String("config"), fl.String("adapter"))
	if err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("determining the admin API address: %w", err)
	}
	uri := "/sse/hubs/" + url.PathEscape(hub) + "/publish"
	resp, err := caddycmd.AdminAPIRequest(adminAddr, http.MethodPost, uri, nil, bytes.NewReader(body))
	if err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("publishing to hub %q: %w", hub, refusal(err))
	}
	defer resp.Body.Close()
	var res publishResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("reading the answer of the admin API: %w", err)
	}
	fmt.Println(res.ID)
	return caddy.ExitCodeSuccess, nil
}

// cmdPublishStream implements caddy sse-publish --stream: standard input
// is the body of a streaming publish, sent as it is read; the answer is
// printed.
func cmdPublishStream(fl caddycmd.Flags) (int, error) {
	switch {
	case fl.NArg() > 0:
		return caddy.ExitCodeFailedStartup, errors.New("--stream reads the events from standard input; give no data argument")
	case fl.Bool("json"):
		return caddy.ExitCodeFailedStartup, errors.New("--json and --stream do not go together; for JSON events, use --stream --ndjson")
	}
	topics, err := fl.GetStringArray("topic")
	if err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("reading --topic: %w", err)
	}
	query := url.Values{"topic": topics}
	if e := fl.String("event"); e != "" {
		query.Set("event", e)
	}
	contentType := "text/event-stream"
	if fl.Bool("ndjson") {
		contentType = "application/x-ndjson"
	}
	hub := fl.String("hub")
	adminAddr, err := caddycmd.DetermineAdminAPIAddress(fl.String("address"), nil, fl.String("config"), fl.String("adapter"))
	if err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("determining the admin API address: %w", err)
	}
	uri := "/sse/hubs/" + url.PathEscape(hub) + "/publish"
	if q := query.Encode(); q != "" {
		uri += "?" + q
	}
	// only an io.Reader, so that it is sent as it is read (chunked)
	body := struct{ io.Reader }{os.Stdin}
	resp, err := caddycmd.AdminAPIRequest(adminAddr, http.MethodPost, uri,
		http.Header{"Content-Type": {contentType}}, body)
	if err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("publishing a stream to hub %q: %w", hub, refusal(err))
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("reading the answer of the admin API: %w", err)
	}
	fmt.Println(string(bytes.TrimSpace(answer)))
	return caddy.ExitCodeSuccess, nil
}

// cliRequestBody builds the JSON publish request from the flags and the
// data.
func cliRequestBody(fl caddycmd.Flags) ([]byte, error) {
	topics, err := fl.GetStringArray("topic")
	if err != nil {
		return nil, fmt.Errorf("reading --topic: %w", err)
	}
	data, err := cliData(fl.Arg(0), fl.NArg() > 0)
	if err != nil {
		return nil, err
	}
	msg := cliMessage{Topic: topics, Event: fl.String("event")}
	if fl.Bool("json") {
		if !json.Valid([]byte(data)) {
			return nil, errors.New("--json: the data is not a valid JSON value")
		}
		msg.Data = json.RawMessage(data)
	} else if msg.Data, err = json.Marshal(data); err != nil {
		return nil, fmt.Errorf("encoding the data: %w", err)
	}
	return json.Marshal(msg)
}

// cliData returns the argument if there is one, else standard input
// without its final line ending.
func cliData(arg string, hasArg bool) (string, error) {
	if hasArg {
		return arg, nil
	}
	b, err := io.ReadAll(os.Stdin)
	if err != nil {
		return "", fmt.Errorf("reading the data from standard input: %w", err)
	}
	s := strings.TrimSuffix(string(b), "\n")
	return strings.TrimSuffix(s, "\r"), nil
}

// refusal turns an error of caddycmd.AdminAPIRequest, which quotes the
// body of an error answer, into the message of the JSON error body when
// there is one.
func refusal(err error) error {
	msg := err.Error()
	const marker = "caddy responded with error: "
	i := strings.Index(msg, marker)
	if i < 0 {
		return err
	}
	rest := msg[i+len(marker):] // "HTTP 400: {...}"
	status, body, ok := strings.Cut(rest, ": ")
	if !ok {
		return err
	}
	var eb struct {
		Error  string `json:"error"`
		Count  *int   `json:"count"`
		LastID string `json:"last_id"`
	}
	if json.Unmarshal([]byte(body), &eb) != nil || eb.Error == "" {
		return err
	}
	switch {
	case eb.Count == nil:
		return fmt.Errorf("%s: %s", status, eb.Error)
	case *eb.Count == 0:
		return fmt.Errorf("%s: %s (no event of the stream was published)", status, eb.Error)
	case *eb.Count == 1:
		return fmt.Errorf("%s: %s (1 event of the stream was published, %s)", status, eb.Error, eb.LastID)
	}
	return fmt.Errorf("%s: %s (%d events of the stream were published, the last one %s)", status, eb.Error, *eb.Count, eb.LastID)
}
