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
		Usage: "[--topic <topic>]... [--event <type>] [--hub <name>] [--json] [--address <interface>] [--config <path> [--adapter <name>]] [<data>]",
		Short: "Publishes a Server-Sent Event through the admin API",
		Long: `
Publishes one event to a hub of the running Caddy instance, through the
admin API endpoint POST /sse/hubs/<hub>/publish, and prints its id.

The data is the argument, or else standard input (without its final line
ending). With --json, the data is a JSON value: a string is sent as the
string itself, anything else in its compact JSON form. Without --topic,
the event goes to the topic "default"; --topic may be repeated.

The admin address is --address if given, else the one in the --config
file, else the default (localhost:2019), as for 'caddy stop'.

A refused event (an invalid topic or event type, an unknown hub...) makes
the command exit with status 1 and the server's message.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().StringArrayP("topic", "t", nil, "Topic to publish to (repeatable)")
			cmd.Flags().StringP("event", "e", "", "Event type (default: message)")
			cmd.Flags().String("hub", DefaultHubName, "Hub to publish to")
			cmd.Flags().Bool("json", false, "The data is a JSON value")
			cmd.Flags().String("address", "", "The address of the admin API, if not the default")
			cmd.Flags().StringP("config", "c", "", "Configuration file to read the admin address from, if --address is not used")
			cmd.Flags().StringP("adapter", "a", "", "Name of the config adapter (when --config is used)")
			cmd.Args = cobra.MaximumNArgs(1)
			cmd.RunE = caddycmd.WrapCommandFuncForCobra(cmdPublish)
		},
	})
}

// cliMessage is the JSON publish request the command sends.
type cliMessage struct {
	Topic []string        `json:"topic,omitempty"`
	Event string          `json:"event,omitempty"`
	Data  json.RawMessage `json:"data"`
}

// cmdPublish implements caddy sse-publish.
func cmdPublish(fl caddycmd.Flags) (int, error) {
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
	var eb errorBody
	if json.Unmarshal([]byte(body), &eb) != nil || eb.Error == "" {
		return err
	}
	return fmt.Errorf("%s: %s", status, eb.Error)
}
