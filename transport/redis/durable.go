package redis

import (
	"context"
	"errors"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"go.uber.org/zap"
)

// checkDurable finds out whether the Redis server loses no write when it
// restarts (appendonly yes, appendfsync always), and tells the scripts
// (the state script records it in the meta key). The scripts start a new
// epoch when the server restarted, unless it is durable: a server
// restarted from a snapshot, or a promoted replica, may have lost the
// newest events, whose ids would otherwise be given again by the nodes
// that did not see them (see ensure in scripts.go). A server whose CONFIG
// cannot be read counts as not durable.
func (r *reader) checkDurable(ctx context.Context) {
	t := r.t
	cfg, err := t.client.ConfigGet(ctx, "append*").Result()
	var re goredis.Error
	switch {
	case err == nil:
		d := "0"
		if strings.EqualFold(cfg["appendonly"], "yes") && strings.EqualFold(cfg["appendfsync"], "always") {
			d = "1"
		}
		r.durable.Store(d)
	case errors.As(err, &re): // CONFIG refused (managed Redis, ACL)
		t.logger.Debug("cannot read redis's appendonly and appendfsync: a restart of redis starts a new epoch", zap.Error(err))
		r.durable.Store("0")
	default: // not answered: what was known stays
		return
	}
	// record it at once, before the node publishes
	if _, err := t.state(ctx, "", 0, stateRun); err != nil {
		t.logger.Debug("recording redis's durability", zap.Error(err))
	}
}

// durability is what checkDurable found: "1", "0", or "" while unknown.
func (r *reader) durability() string {
	d, _ := r.durable.Load().(string)
	return d
}
