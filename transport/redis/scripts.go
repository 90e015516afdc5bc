package redis

import (
	goredis "github.com/redis/go-redis/v9"
)

// The Lua scripts that keep a hub's history in Redis. Each runs
// atomically, so that ids, history and Pub/Sub messages of a hub follow one
// order whatever the number of nodes.
//
// Every key and channel of a hub begins with its base, "{<prefix>:<hub>}",
// a Redis Cluster hash tag: a hub lives in one slot. KEYS[1] is the meta
// key (declared so that Cluster routes the script); the other keys are
// built inside the scripts from the base, which is ARGV[1]:
//
//	B:meta            hash: epoch, seq, bytes, events, forgotten, ibytes;
//	                  cost (what the history costs Redis, estimated: see
//	                  "Cost" in luaLib);
//	                  run and runat (the run id of the server that last
//	                  ran a script, and when it was last read: see
//	                  ensure) and durable (the nodes found
//	                  that it loses no write in a restart); audit (keys
//	                  went missing: the janitor recounts the figures);
//	                  refreshed and rcur (the renewal of the keys'
//	                  expiry); and max_idle, to lower the 16384 idle
//	                  topics kept
//	B:old             list of epochs whose keys are still to be deleted
//	B:i:<key>         string: an idempotency key's record (see below)
//	B:iq              list: "<ms> <key>" per idempotency key, in the order
//	                  of first use (when, in ms since the epoch), which is
//	                  the order keys expire and are evicted in
//	B:c:<topic>       the Pub/Sub channel of a topic: its events of one
//	                  topic
//	B:m               the Pub/Sub channel of the events of several
//	                  topics, published once for the hub: every node
//	                  follows it (and delivers what its subscribers
//	                  follow)
//	B:a               the Pub/Sub channel of the events of one topic,
//	                  each published there too: with B:m, every event
//	                  of the hub once, which the nodes that watch
//	                  patterns follow (see patternlive.go)
//	B:ctl             the Pub/Sub channel of the nodes' control messages
//	                  (see control.go); the scripts do not use it
//	B:<E>:t:<topic>   list: the retained entries of a topic, oldest first
//	B:<E>:last        zset: topic -> seq of its newest event (for prev)
//	B:<E>:names       zset: topic -> 0, the topics of last, for ranges by
//	                  name (ZRANGEBYLEX: the topics of a pattern's
//	                  literal prefix, see patternScript)
//	B:<E>:first       zset: topic -> seq of its oldest retained event, or
//	                  an older one (a score falls behind when an event
//	                  leaves by the topic's count limit, and is put right
//	                  when the hub's oldest event is looked for)
//	B:<E>:idle        zset: topic -> seq of its newest event, for topics
//	                  without retained events (forgotten oldest first)
//	B:<E>:refs        hash: seq -> topics still holding it, for events
//	                  published to several topics
//	B:<E>:body        hash: seq -> entry, for events published to several
//	                  topics: stored once, their topics' lists hold a stub
//
// where E is the epoch: data keys carry it in their names, so that a lost
// meta key can never mix two epochs' events.
//
// Every key expires, a week after it was last renewed (history_ttl and a
// day, with history_ttl), so that a hub no node runs any more, or the
// keys of an epoch whose meta key was lost, go in the end: the lists get
// their expiry when created, the janitor renews it every quarter of that
// (see trimScript); an idempotency record gets two days when written.
//
// Keys evicted by Redis (maxmemory) are tolerated: the scripts never fail
// on a missing key, take what is missing for the worst (a topic without
// its newest seq in last may have had events up to the head), and the
// janitor recounts the figures from the lists.
//
// An entry, stored in its topic's list and published on its topic's
// channel (for an event of several topics: stored once in the body hash,
// with a stub in each topic's list, and published once on B:m), is
//
//	<epoch> <seq> <unix ms> <size> <n>\n
//	<prev> <topic>\n   (n lines: each topic and the seq of its previous event)
//	<body>             (the event's stream form without its id field)
//
// where size is the event's transport.Event.Size, which history_max_bytes
// counts. A stub is the entry's first line followed by "@".
//
// An idempotency key's record keeps what a repeat needs (see "#
// Idempotency" at transport.Transport), as four lines:
//
//	<first use, ms> <positions recorded>\n
//	<runs>\n          the ids by position: an epoch, then "<seq>+<count>"
//	                  per run of consecutive seqs, another epoch where
//	                  the epoch changes
//	<counts>\n        the subscriber counts of the first positions (at
//	                  most transport.IdempotencyCountedPositions), as
//	                  "<count>" or "<count>*<positions>" runs; a position
//	                  without one counts 0
//	<fingerprint>
//
// The meta key's ibytes is what the records cost together (see kcost),
// which the scripts keep within the budget, forgetting the oldest keys
// first; a record has no TTL of its own: the scripts forget it a day after
// its first use (kexpire), and count it until then.

// luaLib is the part every script shares. The hub's figures in the meta
// key are read once (ensure) and written once (save) per script; those of
// the idempotency records likewise (kload, ksave).
const luaLib = `
local B = ARGV[1]
local meta = KEYS[1]
local MAXIDLE = 16384
local SEQ, BYTES, EVENTS, FORGOTTEN = 0, 0, 0, 0
local COST = 0 -- what the history costs Redis, as estimated (see "Cost" below)
local SAVED = {} -- the figures as the meta key holds them: save writes only what changed
local IDLED = false -- a topic lost its last retained event
local SUSPECT = false -- keys of the history went missing (evicted): the figures are to be recounted
local DURABLE = false -- the server loses no write when it restarts (see ensure)
local RUN = nil -- the run id of the server
local AUDIT = false -- the meta key asks for a recount (its audit)
local REFRESHED, RCUR = 0, -1 -- the renewal of the keys' expiry (meta's refreshed and rcur)

local function fmt(n) return string.format('%d', n) end

-- now_ms returns the server's time in ms, read once per script: a
-- script is short, and Redis itself takes the time as frozen while it
-- runs (for the expiry of keys).
local NOW = nil
local function now_ms()
	if not NOW then
		local t = redis.call('TIME')
		NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
	end
	return NOW
end

local function k(E, name) return B .. ':' .. E .. ':' .. name end
local function tk(E, topic) return B .. ':' .. E .. ':t:' .. topic end

-- keyttl is the expiry of the hub's keys, refreshed while a node runs
-- the hub (see trimScript): a day more than the history's age limit, or
-- a week without one.
local function keyttl(ttl)
	if ttl > 0 then return ttl + 86400000 end
	return 7 * 86400000
end

-- Cost: what the history costs Redis (used_memory), estimated from
-- above for Redis 7 with its default encodings and jemalloc (see
-- sizing.go for how the constants were measured). The meta key's cost
-- is kept within cost_bound, as bytes within history_max_bytes: the trim
-- evicts the oldest events, and first forgets idle topics, while either
-- is over. It sums:
--
--   per list item (an entry, or a stub of an event of several topics):
--     item_cost of its length: its bytes in a listpack, with the
--     allocator's rounding;
--   per event of several topics: shared_cost of its size (the entry in
--     the body hash, which is shorter than the size, and its refs);
--   per topic with a list: list_cost (the key, its expiry, the list's
--     own structures);
--   per topic known (in the last and names zsets, and in the first or
--     the idle one): zset_cost.
--
-- COST_ALLOWANCE lets a small hub keep a few topics whatever its
-- history_max_bytes.
local COST_ALLOWANCE = 262144

-- cost_bound is the most the history may cost.
local function cost_bound(max_bytes) return 2 * max_bytes + COST_ALLOWANCE end

-- alloc is what the allocator gives for n bytes (jemalloc's size
-- classes: 16 bytes apart up to 128, then four per doubling).
local function alloc(n)
	if n <= 8 then return 8 end
	if n <= 128 then return math.ceil(n / 16) * 16 end
	local _, e = math.frexp(n - 1)
	local step = 2 ^ (e - 3)
	return math.ceil(n / step) * step
end

-- item_cost is what a list item of n bytes costs: in a listpack of
-- several items (up to 8 KiB), n, its header and back length (11 at
-- most), a quarter for the listpack's rounding and a share of its node;
-- a large one has a listpack and a node (48) of its own.
local function item_cost(n)
	if n + 17 > 4096 then return alloc(n + 17) + 48 end
	return math.floor((n + 11) * 1.25) + 8
end

-- shared_cost is what an event of several topics, of the given size,
-- costs besides its stubs: its entry in the body hash (an sds value, a
-- field, a dict entry and its bucket) and in the refs hash. An entry is
-- at least 136 bytes shorter than its size (which counts 165 bytes and
-- the id twice where the entry has a first line of about 50).
local function shared_cost(size) return alloc(size - 126) + 88 + 104 end

-- list_cost is what topic's list costs besides its items: its key (an
-- sds, a dict entry and bucket, the object), its expiry (a dict entry
-- and bucket), the quicklist, its first node and listpack header.
local function list_cost(E, topic) return alloc(#tk(E, topic) + 6) + 256 end

-- zset_cost is what a known topic costs in the last and names zsets and
-- in the first or idle one: per zset its name (an sds), a skiplist node,
-- a dict entry and bucket.
local function zset_cost(topic) return 3 * (alloc(#topic + 6) + 128) end

-- save writes the figures back, if they changed; a recount is asked for
-- when keys went missing. A script that changed nothing writes nothing:
-- no replication or AOF traffic for idle hubs.
local function save()
	if BYTES < 0 then BYTES = 0 end
	if EVENTS < 0 then EVENTS = 0 end
	if COST < 0 then COST = 0 end
	if SEQ ~= SAVED[1] or BYTES ~= SAVED[2] or EVENTS ~= SAVED[3] or FORGOTTEN ~= SAVED[4] or COST ~= SAVED[5] then
		redis.call('HSET', meta, 'seq', SEQ, 'bytes', BYTES, 'events', EVENTS, 'forgotten', FORGOTTEN, 'cost', COST)
		SAVED = {SEQ, BYTES, EVENTS, FORGOTTEN, COST}
	end
	if SUSPECT and not AUDIT then
		redis.call('HSET', meta, 'audit', 1)
		AUDIT = true
	end
end

-- read_run reads the server's run id into RUN (see ensure).
local function read_run()
	local info = redis.pcall('INFO', 'server')
	if type(info) == 'string' then RUN = string.match(info, 'run_id:(%x+)') end
end

-- restart starts epoch cand in place of E, whose keys the janitor deletes.
-- The run id is recorded with it (read if the script had not), so that
-- the next script that reads it does not start another epoch for the
-- same restart.
local function restart(E, cand)
	redis.call('RPUSH', B .. ':old', E)
	redis.call('HSET', meta, 'epoch', cand)
	if not RUN then read_run() end
	if RUN then redis.call('HSET', meta, 'run', RUN) end
	SEQ, BYTES, EVENTS, FORGOTTEN, COST = 0, 0, 0, 0, 0
	save()
	return cand
end

-- ensure returns the hub's epoch, starting epoch cand when the hub has
-- none (first use, or its history was lost), and loads its figures.
--
-- It also starts a new epoch when the server restarted (its run id
-- changed) since the hub was last used, unless the nodes found that it
-- loses no write in a restart (appendonly with appendfsync always: meta's
-- durable): a server restarted from a snapshot, or a replica promoted in
-- a failover, may have lost the newest events, whose ids would be given
-- again. Only a node that saw them could tell; a new epoch is safe for
-- every node.
--
-- INFO costs more than the rest of a publish, so the run id is read at
-- most every RUNCHECK ms (meta's runat, by the server's clock): a restart
-- or a failover takes longer than that between the last check that the
-- server kept and the first script it runs. A user that may not run INFO
-- (the ACL category @dangerous) goes without this check.
--
-- runmode says when the run id is read: 'auto' (the default) as above,
-- for the scripts that give ids or read the history; 'skip' never, for
-- the housekeeping and the figures (a publish or a resynchronisation
-- checks before it matters); 'force' always, without writing runat, for
-- the nodes' periodic check (a script that finds nothing changed writes
-- nothing); 'check' always, writing runat, for the check when a hub
-- opens (the write fails on a read-only replica). light leaves out the
-- look for an evicted last zset (the periodic check saves no figures).
local RUNCHECK = 10
local function ensure(cand, runmode, light)
	runmode = runmode or 'auto'
	local v = redis.call('HMGET', meta, 'epoch', 'seq', 'bytes', 'events', 'forgotten', 'run', 'durable', 'runat',
		'audit', 'refreshed', 'rcur', 'cost')
	DURABLE = v[7] == '1'
	AUDIT = v[9] and true or false
	REFRESHED, RCUR = tonumber(v[10] or '0'), tonumber(v[11] or '-1')
	local read = runmode == 'force' or runmode == 'check'
	local t = nil
	if runmode == 'auto' then
		t = now_ms()
		read = not v[1] or not v[8] or math.abs(t - tonumber(v[8])) >= RUNCHECK
	end
	if read then
		read_run()
		if runmode == 'check' or (RUN and runmode == 'auto') then redis.call('HSET', meta, 'runat', t or now_ms()) end
	end
	if not v[1] then
		redis.call('HSET', meta, 'epoch', cand, 'seq', 0, 'bytes', 0, 'events', 0, 'forgotten', 0, 'cost', 0)
		SAVED = {0, 0, 0, 0, 0}
		if RUN then redis.call('HSET', meta, 'run', RUN) end
		return cand
	end
	SEQ, BYTES, EVENTS, FORGOTTEN = tonumber(v[2]), tonumber(v[3]), tonumber(v[4]), tonumber(v[5])
	COST = tonumber(v[12] or '0')
	SAVED = {SEQ, BYTES, EVENTS, FORGOTTEN, tonumber(v[12] or '-1')}
	-- a hub whose history was written before its cost was counted: the
	-- janitor counts it
	if not v[12] and SEQ > 0 then SUSPECT = true end
	if RUN and v[6] ~= RUN then
		if v[6] and not DURABLE then return restart(v[1], cand) end
		redis.call('HSET', meta, 'run', RUN)
	end
	if not light and EVENTS > 0 and redis.call('EXISTS', k(v[1], 'last')) == 0 then
		-- the topics' newest seqs were evicted: every topic may have had
		-- events up to the head, which a resumption must not miss
		FORGOTTEN = SEQ
		SUSPECT = true
	end
	return v[1]
end

-- head parses an entry's first line: seq, time, size, topics.
local function head(e)
	local _, _, seq, tm, size, n = string.find(e, '^%S+ (%d+) (%d+) (%d+) (%d+)\n')
	return tonumber(seq), tonumber(tm), tonumber(size), tonumber(n)
end

-- An event of several topics is stored once, in the body hash (seq ->
-- entry); the lists of its topics hold a stub: the entry's first line and
-- "@" (an entry ends with a line break).
local function is_stub(e) return string.byte(e, -1) == 64 end

-- full returns the entry that list item e stands for, or nil when its
-- body went missing (evicted).
local function full(E, e)
	if not is_stub(e) then return e end
	local b = redis.call('HGET', k(E, 'body'), (head(e)))
	if not b then SUSPECT = true end
	return b
end

-- prev_of returns the seq of the event of topic before entry e.
local function prev_of(e, topic)
	local _, _, _, n = head(e)
	local pos = string.find(e, '\n', 1, true) + 1
	for i = 1, n do
		local sp = string.find(e, ' ', pos, true)
		local nl = string.find(e, '\n', sp, true)
		if string.sub(e, sp + 1, nl - 1) == topic then
			return tonumber(string.sub(e, pos, sp - 1))
		end
		pos = nl + 1
	end
	return nil
end

-- pop evicts the oldest entry of a topic, which dropped accounts for:
-- the event leaves the history once no topic holds it. The first zset is not updated here: a topic's
-- score there may fall behind its oldest entry, and evict_oldest puts it
-- right when it matters.
local function dropped(E, e)
	local seq, _, size, n = head(e)
	COST = COST - item_cost(#e)
	if n > 1 then
		local refs = k(E, 'refs')
		local left = redis.call('HINCRBY', refs, seq, -1)
		if left > 0 then return end
		if left < 0 then SUSPECT = true end -- the refs hash was evicted
		redis.call('HDEL', refs, seq)
		redis.call('HDEL', k(E, 'body'), seq)
		COST = COST - shared_cost(size)
	end
	BYTES = BYTES - size
	EVENTS = EVENTS - 1
end

local function pop(E, topic)
	local e = redis.call('LPOP', tk(E, topic))
	if e then dropped(E, e) end
end

-- many runs cmd on key with the arguments of list, n at a time.
local function many(cmd, key, list, n)
	for a = 1, #list, n do
		redis.call(cmd, key, unpack(list, a, math.min(#list, a + n - 1)))
	end
end

-- popn evicts the n oldest entries of a topic (n > 0), as pop does, but
-- leaves the stubs (of the events of several topics) to pend (a
-- {seqs = {}, by = {}}: the seqs in order, and by seq how many stubs of
-- it were popped and its size), where
-- drop_shared settles them: an event whose topics all lose it in one
-- script has its refs read and written once, not once per topic.
local function popn(E, topic, n, pend)
	local es = redis.call('LPOP', tk(E, topic), n)
	if not es then return end
	for _, e in ipairs(es) do
		local seq, _, size, nt = head(e)
		COST = COST - item_cost(#e)
		if nt > 1 then
			local m = pend.by[seq]
			if not m then
				m = {d = 0, size = size}
				pend.by[seq] = m
				pend.seqs[#pend.seqs + 1] = seq
			end
			m.d = m.d + 1
		else
			BYTES = BYTES - size
			EVENTS = EVENTS - 1
		end
	end
end

-- drop_shared settles the stubs popn left in pend, as dropped does one
-- by one: an event leaves the history once no topic holds it.
local function drop_shared(E, pend)
	local seqs = pend.seqs
	if #seqs == 0 then return end
	local refs = k(E, 'refs')
	local keep, gone = {}, {}
	for a = 1, #seqs, 1000 do
		local b = math.min(#seqs, a + 999)
		local vals = redis.call('HMGET', refs, unpack(seqs, a, b))
		for x = a, b do
			local seq = seqs[x]
			local m = pend.by[seq]
			local left = (tonumber(vals[x - a + 1]) or 0) - m.d
			if left > 0 then
				keep[#keep + 1] = seq
				keep[#keep + 1] = left
			else
				if left < 0 then SUSPECT = true end -- the refs hash was evicted
				gone[#gone + 1] = seq
				BYTES = BYTES - m.size
				EVENTS = EVENTS - 1
				COST = COST - shared_cost(m.size)
			end
		end
	end
	many('HSET', refs, keep, 1000)
	many('HDEL', refs, gone, 1000)
	many('HDEL', k(E, 'body'), gone, 1000)
end

-- front returns the seq and time of a topic's oldest entry; a topic
-- without entries leaves the first zset and becomes idle. held tells that
-- the topic must have entries (it is in the first zset, and none was
-- popped): without any, its list was evicted.
local function front(E, topic, held)
	local e = redis.call('LINDEX', tk(E, topic), 0)
	if e then
		local s, tm = head(e)
		return s, tm
	end
	if held then SUSPECT = true end
	if redis.call('ZREM', k(E, 'first'), topic) == 1 then COST = COST - list_cost(E, topic) end
	-- without its newest seq (evicted), the head stands in for it
	redis.call('ZADD', k(E, 'idle'), redis.call('ZSCORE', k(E, 'last'), topic) or SEQ, topic)
	IDLED = true
	return nil
end

-- oldest returns the hub's oldest retained event: its seq and time, after
-- putting right the scores of the first zset that fell behind.
local function oldest(E)
	local first = k(E, 'first')
	while true do
		local f = redis.call('ZRANGE', first, 0, 0, 'WITHSCORES')
		if #f == 0 then return nil end
		local s, tm = front(E, f[1], true)
		if s == tonumber(f[2]) then return s, tm end
		if s then redis.call('ZADD', first, s, f[1]) end
	end
end

-- evict_oldest evicts the event at seq s, the hub's oldest, from every
-- topic that holds it (there it is the oldest too).
local function evict_oldest(E, s)
	local first = k(E, 'first')
	local ts = redis.call('ZRANGEBYSCORE', first, s, s)
	for _, t in ipairs(ts) do
		local fs = front(E, t, true)
		if fs == s then
			pop(E, t)
			fs = front(E, t)
		end
		if fs then redis.call('ZADD', first, fs, t) end
	end
end

-- forget_oldest drops the n oldest idle topics (see forget), and returns
-- how many it dropped.
local function forget_oldest(E, n)
	local gone = redis.call('ZPOPMIN', k(E, 'idle'), n)
	local last, names = k(E, 'last'), k(E, 'names')
	for i = 1, #gone, 2 do
		redis.call('ZREM', last, gone[i])
		redis.call('ZREM', names, gone[i])
		COST = COST - zset_cost(gone[i])
		local s = tonumber(gone[i + 1])
		if s > FORGOTTEN then FORGOTTEN = s end
	end
	return #gone / 2
end

-- shed forgets the oldest idle topics, a few at a time, while the history
-- costs more than max_cost: they go before any event does.
local function shed(E, max_cost)
	while COST > max_cost and forget_oldest(E, 16) > 0 do end
end

-- trim evicts expired events, then the oldest until the history fits in
-- max_bytes and its cost in cost_bound (idle topics forgotten first); at
-- most budget evictions (the janitor goes on later).
-- Returns the budget left, and the time of the oldest event retained
-- (nil when none is, or when the budget ran out first).
local function trim(E, ttl, max_bytes, budget)
	local cutoff = -1
	if ttl > 0 then cutoff = now_ms() - ttl end
	local max_cost = cost_bound(max_bytes)
	while budget > 0 and EVENTS > 0 do
		if COST > max_cost then shed(E, max_cost) end
		local s, tm = oldest(E)
		if not s then break end
		if tm >= cutoff and BYTES <= max_bytes and COST <= max_cost then return budget, tm end
		evict_oldest(E, s)
		budget = budget - 1
	end
	if COST > max_cost then shed(E, max_cost) end
	return budget, nil
end

-- sample looks for lists of the history that went missing (evicted), in
-- a few topics: the figures are then to be recounted (see trimScript).
local function sample(E)
	if SUSPECT or EVENTS == 0 then return end
	local first = k(E, 'first')
	if redis.call('EXISTS', first) == 0 then
		SUSPECT = true
		return
	end
	for _, t in ipairs(redis.call('ZRANDMEMBER', first, 4)) do
		if redis.call('EXISTS', tk(E, t)) == 0 then SUSPECT = true end
	end
end

-- janitor_due tells whether the janitor has work that no node's own
-- publishes announce: a recount, or the renewal of the keys' expiry,
-- due every keyttl / 4.
local function janitor_due(ttl)
	if SUSPECT or AUDIT or RCUR >= 0 then return '1' end
	if now_ms() - REFRESHED >= keyttl(ttl) / 4 then return '1' end
	return '0'
end

-- forget drops the oldest idle topics once there are too many, raising
-- the watermark that stands in for their histories.
local function forget(E)
	local idle = k(E, 'idle')
	local n = redis.call('ZCARD', idle)
	if n <= 64 then return end
	local max = tonumber(redis.call('HGET', meta, 'max_idle') or MAXIDLE)
	if n <= max then return end
	forget_oldest(E, n - math.floor(max * 3 / 4))
end

-- Idempotency records (see the key layout above).
local IQ = B .. ':iq'
local KTTL = 86400000
local KCOUNTED = 1000 -- transport.IdempotencyCountedPositions
local IBYTES, IBYTES_SAVED = nil, nil
local KNEXT = nil -- when kexpire has keys to forget again (ms), nil: none

local function kname(key) return B .. ':i:' .. key end

local function kload()
	if not IBYTES then
		IBYTES = tonumber(redis.call('HGET', meta, 'ibytes') or '0')
		IBYTES_SAVED = IBYTES
	end
end

-- ksave writes the records' cost back, if it changed.
local function ksave()
	if IBYTES and IBYTES ~= IBYTES_SAVED then
		redis.call('HSET', meta, 'ibytes', IBYTES)
		IBYTES_SAVED = IBYTES
	end
end

-- kcost is what a record counts for: its key's name in the keyspace and
-- in the list, its value, and what Redis spends to hold them (the key's
-- dict entry and object, allocation headers, the list entry's, and its
-- expiry's entry in the expires dict).
local function kcost(key, vlen)
	return 2 * #key + vlen + #B + 168
end

-- kentry splits an entry of the list: the key and the time of first use.
local function kentry(e)
	local sp = string.find(e, ' ', 1, true)
	return string.sub(e, sp + 1), tonumber(string.sub(e, 1, sp - 1))
end

-- kdel deletes the record of key, taken off the list already.
local function kdel(key)
	local kk = kname(key)
	local n = redis.call('STRLEN', kk)
	if n > 0 then
		IBYTES = IBYTES - kcost(key, n)
		redis.call('DEL', kk)
	end
end

-- kexpire forgets the keys first used a day ago or more, at most n of
-- them, and notes in KNEXT when the next one is due.
local function kexpire(now, n)
	kload()
	KNEXT = nil
	while n > 0 do
		local e = redis.call('LINDEX', IQ, 0)
		if not e then
			IBYTES = 0
			return
		end
		local key, tm = kentry(e)
		if tm > now - KTTL then
			KNEXT = tm + KTTL
			return
		end
		redis.call('LPOP', IQ)
		kdel(key)
		n = n - 1
	end
	KNEXT = now
end

-- kevict forgets the oldest keys until the records cost at most max, but
-- never those in the set keep (the keys of the requests being published),
-- which stay in their places whatever they cost.
local function kevict(max, keep)
	kload()
	local held = {}
	while IBYTES > max do
		local e = redis.call('LPOP', IQ)
		if not e then
			IBYTES = 0
			for _, h in ipairs(held) do IBYTES = IBYTES + kcost(h[2], redis.call('STRLEN', kname(h[2]))) end
			break
		end
		local key = kentry(e)
		if keep and keep[key] then held[#held + 1] = {e, key} else kdel(key) end
	end
	for j = #held, 1, -1 do redis.call('LPUSH', IQ, held[j][1]) end
end

-- kparse splits a record's value.
local function kparse(v)
	local a = string.find(v, '\n', 1, true)
	local b = string.find(v, '\n', a + 1, true)
	local c = string.find(v, '\n', b + 1, true)
	local _, _, t, n = string.find(v, '^(%d+) (%d+)\n')
	return {t = tonumber(t), n = tonumber(n), runs = string.sub(v, a + 1, b - 1),
		counts = string.sub(v, b + 1, c - 1), fp = string.sub(v, c + 1)}
end

-- kwrite stores record r of key, whose former value was vlen bytes long
-- (0: none), and counts the difference.
local function kwrite(key, r, vlen)
	local v = fmt(r.t) .. ' ' .. fmt(r.n) .. '\n' .. r.runs .. '\n' .. r.counts .. '\n' .. r.fp
	redis.call('SET', kname(key), v, 'PX', 2 * KTTL) -- forgotten by the scripts after a day, by Redis if no node runs the hub
	if vlen > 0 then IBYTES = IBYTES - kcost(key, vlen) end
	IBYTES = IBYTES + kcost(key, #v)
end

-- kruns parses runs: {E, pos, seq, n} each.
local function kruns(s)
	local out, E, pos = {}, nil, 0
	for tok in string.gmatch(s, '%S+') do
		local p = string.find(tok, '+', 1, true)
		if p then
			local n = tonumber(string.sub(tok, p + 1))
			out[#out + 1] = {E = E, pos = pos, seq = tonumber(string.sub(tok, 1, p - 1)), n = n}
			pos = pos + n
		else
			E = tok
		end
	end
	return out
end

local function kruns_string(rs)
	local parts, E = {}, nil
	for _, r in ipairs(rs) do
		if r.E ~= E then
			parts[#parts + 1] = r.E
			E = r.E
		end
		parts[#parts + 1] = fmt(r.seq) .. '+' .. fmt(r.n)
	end
	return table.concat(parts, ' ')
end

-- kcounts parses counts: a table by position (from 1), and its length.
local function kcounts(s)
	local out = {}
	for tok in string.gmatch(s, '%S+') do
		local p = string.find(tok, '*', 1, true)
		local c, n = tok, 1
		if p then c, n = string.sub(tok, 1, p - 1), tonumber(string.sub(tok, p + 1)) end
		c = tonumber(c)
		for _ = 1, n do out[#out + 1] = c end
	end
	return out, #out
end

local function kcounts_string(cs, len)
	local parts, i = {}, 1
	while i <= len do
		local c, j = cs[i] or 0, i + 1
		while j <= len and (cs[j] or 0) == c do j = j + 1 end
		if j - i > 1 then parts[#parts + 1] = fmt(c) .. '*' .. fmt(j - i) else parts[#parts + 1] = fmt(c) end
		i = j
	end
	return table.concat(parts, ' ')
end
`

// publishScript stores and publishes the publishes of a batch (see
// batcher): the concurrent publish calls of a node, each with its own
// messages, idempotency key, fingerprint and offset, and its own answer.
// What does not depend on a call is done once for the batch: the rights
// checks, the read of the hub's figures and of the server's clock, the
// epoch's checks, the look for an evicted last zset, the trim, and the
// write of the figures; the entries of a topic are pushed to its list
// together, and its newest seq read and written once.
//
// ARGV: base, publish command (SPUBLISH or PUBLISH), candidate epoch,
// history events, ttl ms, max bytes, the idempotency records' budget in
// bytes, floor epoch, floor seq (the newest seq the caller has seen: a
// hub whose seq is below it in the same epoch was rolled back, and
// restarts), the number of calls, then per call: idempotency key (""
// none), fingerprint, offset, the number of messages, then per message:
// topics, size without the id, body, the topics.
//
// Returns {"noperm", command} when the user may not write the hub's
// figures (no call ran), or {"ok", epoch, answer per call}, where an
// answer is one element "mismatch" (the key is recorded with another
// fingerprint), two elements "noperm", command (the user may not publish
// on a channel of the call), or "ok" followed by a receipt per message:
// "n<id>" for a new event, "k<id>" for a new event recorded under the
// idempotency key, "r<id>[ <subscribers>]" for one published before
// under the key (the publisher records the subscriber counts of the first
// positions once known: countScript). A call refused (mismatch, noperm)
// stores nothing and takes no seq; its neighbours go on as if it had not
// been sent.
var publishScript = goredis.NewScript(luaLib + publishBody)

const publishBody = `
local pubcmd = ARGV[2]
local max_events = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local max_bytes = tonumber(ARGV[6])

-- The script is all or nothing for each call: Redis does not undo what a
-- script wrote before an error. So what may refuse a call is checked
-- before any write (the user's permissions, which an ACL edited while the
-- hub runs may take away, and the idempotency keys); the seq of every
-- event of the batch is advanced first, by the first write that may be
-- refused (HSET: out of memory), so that a refusal leaves nothing and no
-- id is given twice even if the script fails midway; the events are
-- published last; and keys that went missing (evicted) are tolerated.
-- A script that fails midway (which only a key of the wrong type, put
-- there by someone else, could cause) fails every call of its batch:
-- the seqs it advanced are not given again, and what it wrote before the
-- failure stays, unpublished.

-- The calls: call.at is the index in ARGV of its first message.
local calls = {}
local i = 11
for c = 1, tonumber(ARGV[10]) do
	local call = {key = ARGV[i], fp = ARGV[i + 1], offset = tonumber(ARGV[i + 2]), nmsg = tonumber(ARGV[i + 3])}
	call.at = i + 4
	i = call.at
	for _ = 1, call.nmsg do i = i + 3 + tonumber(ARGV[i]) end
	calls[c] = call
end

-- channel is where the message with nt topics, the first at ARGV[t0], is
-- published: an event of several topics once for the hub, on B:m, which
-- every node follows; an event of one topic on its topic's channel, and
-- on B:a too (see add).
local function channel(nt, t0)
	if nt > 1 then return B .. ':m' end
	return B .. ':c:' .. ARGV[t0]
end

if redis.acl_check_cmd then
	if not redis.acl_check_cmd('HSET', meta, 'seq', '0') then
		return {'noperm', 'HSET ' .. meta}
	end
	local checked = {}
	for _, call in ipairs(calls) do
		local j = call.at
		for _ = 1, call.nmsg do
			local nt = tonumber(ARGV[j])
			local chs = {channel(nt, j + 3)}
			if nt == 1 then chs[2] = B .. ':a' end
			for _, ch in ipairs(chs) do
				local ok = checked[ch]
				if ok == nil then
					ok = redis.acl_check_cmd(pubcmd, ch, '') and true or false
					checked[ch] = ok
				end
				if not ok then
					call.noperm = pubcmd .. ' ' .. ch
					break
				end
			end
			if call.noperm then break end
			j = j + 3 + nt
		end
	end
end

local E = ensure(ARGV[3])
if E == ARGV[8] and SEQ < tonumber(ARGV[9]) then
	E = restart(E, ARGV[3])
end
local t_now = now_ms()

-- The idempotency keys' records, read before any write: a state per key
-- (the calls of a batch may share one, a retry sent while the first
-- publish was still waiting), in sorder by first use. st.sim is how many
-- positions will be recorded once the calls before are done; st.recorded
-- how many are, as the calls are done.
local states, sorder = {}, {}
local stale = {} -- records a day old, not yet forgotten: deleted once the seq is written
local function kstate(key, fp)
	local st = {key = key, vlen = 0, newkey = false, cur = 1}
	local v = redis.call('GET', kname(key))
	if v then
		local rec = kparse(v)
		if rec.t <= t_now - KTTL then
			stale[#stale + 1] = fmt(rec.t) .. ' ' .. key
		else
			st.rec, st.vlen = rec, #v
		end
	end
	if not st.rec then
		st.rec = {t = t_now, n = 0, runs = '', counts = '', fp = fp}
		st.newkey = true
	end
	st.n0, st.recorded, st.sim = st.rec.n, st.rec.n, st.rec.n
	st.runs = kruns(st.rec.runs)
	states[key] = st
	sorder[#sorder + 1] = st
	return st
end

local fresh = 0 -- the events the batch publishes
for _, call in ipairs(calls) do
	if not call.noperm then
		local st = nil
		if call.key ~= '' then st = states[call.key] or kstate(call.key, call.fp) end
		if st and st.rec.fp ~= call.fp then
			call.mismatch = true
		else
			call.st = st
			local recorded = st and st.sim or 0
			fresh = fresh + call.nmsg - math.max(0, math.min(call.nmsg, recorded - call.offset))
			if st and call.offset <= recorded and call.offset + call.nmsg > recorded then
				st.sim = call.offset + call.nmsg
			end
		end
	end
end

-- the seq first: a script that fails after it gives no id twice
if fresh > 0 then redis.call('HSET', meta, 'seq', SEQ + fresh) end
if #stale > 0 then
	kload()
	for _, e in ipairs(stale) do
		redis.call('LREM', IQ, 1, e)
		kdel(kentry(e))
	end
end

-- repeated returns the receipt of the event recorded under st's key at
-- pos.
local function repeated(st, pos)
	local runs = st.runs
	while runs[st.cur].pos + runs[st.cur].n <= pos do st.cur = st.cur + 1 end
	while runs[st.cur].pos > pos do st.cur = st.cur - 1 end
	local r = runs[st.cur]
	local a = 'r' .. r.E .. '-' .. fmt(r.seq + pos - r.pos)
	if pos < KCOUNTED then
		if not st.counts then st.counts = kcounts(st.rec.counts) end
		local c = st.counts[pos + 1]
		if c and c > 0 then a = a .. ' ' .. fmt(c) end
	end
	return a
end

-- record notes that the event at SEQ is recorded at st's next position.
local function record(st)
	local runs = st.runs
	local r = runs[#runs]
	if r and r.E == E and r.seq + r.n == SEQ then
		r.n = r.n + 1
	else
		runs[#runs + 1] = {E = E, pos = st.recorded, seq = SEQ, n = 1}
	end
	st.recorded = st.recorded + 1
end

-- The events, as they are built: what is written for them is gathered
-- and written after the loop, a command per key (or per thousand items).
local now = fmt(t_now)
local last = k(E, 'last')
local newest = {} -- topic -> seq of its newest event (a string), as the batch goes
local torder = {} -- the topics, in order of first use
local items = {} -- topic -> the items to push to its list; .first: the seq of the first
local shared = {} -- refs and body hash fields of the events of several topics: seq, topics, seq, entry
local pubs = {} -- channel, entry, ... : published last
local fresh_names = {} -- 0, topic, ... : the topics new to the hub, for the names zset

-- add builds the entry of the message at ARGV[j] with SEQ.
local function add(j)
	local nt, base, body = tonumber(ARGV[j]), tonumber(ARGV[j + 1]), ARGV[j + 2]
	local t0 = j + 3
	local s = fmt(SEQ)
	local id = E .. '-' .. s
	local size = base + 2 * #id
	local parts = {E .. ' ' .. s .. ' ' .. now .. ' ' .. fmt(size) .. ' ' .. nt .. '\n'}
	for j2 = 0, nt - 1 do
		local t = ARGV[t0 + j2]
		local p = newest[t]
		if not p then
			p = redis.call('ZSCORE', last, t)
			if not p then -- a topic new to the hub
				p = fmt(FORGOTTEN)
				COST = COST + zset_cost(t)
				fresh_names[#fresh_names + 1] = 0
				fresh_names[#fresh_names + 1] = t
			end
			torder[#torder + 1] = t
			items[t] = {}
		end
		parts[#parts + 1] = p .. ' ' .. t .. '\n'
		newest[t] = s
	end
	parts[#parts + 1] = body
	local e = table.concat(parts)
	if max_events > 0 then
		BYTES, EVENTS = BYTES + size, EVENTS + 1
		local item = e
		if nt > 1 then
			shared[#shared + 1] = {s, nt, e}
			item = parts[1] .. '@'
			COST = COST + shared_cost(size)
		end
		COST = COST + nt * item_cost(#item)
		for j2 = 0, nt - 1 do
			local q = items[ARGV[t0 + j2]]
			q[#q + 1] = item
			q.first = q.first or s
		end
	end
	pubs[#pubs + 1] = channel(nt, t0)
	pubs[#pubs + 1] = e
	if nt == 1 then -- and on the hub's channel of such events (see patternlive.go)
		pubs[#pubs + 1] = B .. ':a'
		pubs[#pubs + 1] = e
	end
	return id
end

local out = {'ok', E}
for _, call in ipairs(calls) do
	if call.noperm then
		out[#out + 1] = 'noperm'
		out[#out + 1] = call.noperm
	elseif call.mismatch then
		out[#out + 1] = 'mismatch'
	else
		out[#out + 1] = 'ok'
		local st, j = call.st, call.at
		for m = 0, call.nmsg - 1 do
			local pos = call.offset + m
			if st and pos < st.recorded then
				out[#out + 1] = repeated(st, pos)
			else
				SEQ = SEQ + 1
				local id = add(j)
				if st and pos == st.recorded then
					record(st)
					out[#out + 1] = 'k' .. id
				else
					out[#out + 1] = 'n' .. id
				end
			end
			j = j + 3 + tonumber(ARGV[j])
		end
	end
end

if #shared > 0 then
	local refs, bodies = {}, {}
	for n, x in ipairs(shared) do
		refs[2 * n - 1], refs[2 * n] = x[1], x[2]
		bodies[2 * n - 1], bodies[2 * n] = x[1], x[3]
	end
	many('HSET', k(E, 'refs'), refs, 1000)
	many('HSET', k(E, 'body'), bodies, 1000)
end
local first, idle = k(E, 'first'), k(E, 'idle')
local kt = keyttl(ttl)
local lasts = {}
local pend = {seqs = {}, by = {}} -- the stubs popped (see popn)
for n, t in ipairs(torder) do
	lasts[2 * n - 1], lasts[2 * n] = newest[t], t
	if max_events > 0 then
		local q, tkey, len = items[t], tk(E, t), 0
		for a = 1, #q, 1000 do
			local b = math.min(#q, a + 999)
			len = redis.call('RPUSH', tkey, unpack(q, a, b))
			if a == 1 and len == b then -- the list was empty
				redis.call('PEXPIRE', tkey, kt)
				if redis.call('ZADD', first, q.first, t) == 0 then
					SUSPECT = true -- the topic had entries, whose list was evicted
				else
					COST = COST + list_cost(E, t)
				end
				redis.call('ZREM', idle, t)
			end
		end
		if len > max_events then popn(E, t, len - max_events, pend) end
	elseif not redis.call('ZSCORE', first, t) then
		redis.call('ZADD', idle, newest[t], t)
		IDLED = true
	end
end
drop_shared(E, pend)
many('ZADD', last, lasts, 1000)
many('ZADD', k(E, 'names'), fresh_names, 1000)
for j = 1, #pubs, 2 do
	redis.call(pubcmd, pubs[j], pubs[j + 1])
end
if #sorder > 0 then
	kexpire(t_now, 1000)
	local keep = {}
	for _, st in ipairs(sorder) do
		keep[st.key] = true
		if st.newkey then redis.call('RPUSH', IQ, fmt(st.rec.t) .. ' ' .. st.key) end
		if st.recorded > st.n0 or st.vlen == 0 then
			st.rec.n, st.rec.runs = st.recorded, kruns_string(st.runs)
			kwrite(st.key, st.rec, st.vlen)
		end
	end
	kevict(tonumber(ARGV[7]), keep)
	ksave()
end
if ttl > 0 or BYTES > max_bytes or COST > cost_bound(max_bytes) then trim(E, ttl, max_bytes, 100000) end
if IDLED then forget(E) end
save()
return out
`

// countScript records the subscriber counts of events published under an
// idempotency key, at its first positions, once the publishing node knows
// them; the positions it does not name keep theirs.
//
// ARGV: base, key, fingerprint, the records' budget, then pairs of a
// position and a count.
var countScript = goredis.NewScript(luaLib + `
local key, fp = ARGV[2], ARGV[3]
kload()
local v = redis.call('GET', kname(key))
if not v then return 0 end
local rec = kparse(v)
if rec.fp ~= fp then return 0 end
local cs, len = kcounts(rec.counts)
for j = 5, #ARGV - 1, 2 do
	local pos = tonumber(ARGV[j])
	if pos < KCOUNTED and pos < rec.n then
		cs[pos + 1] = tonumber(ARGV[j + 1])
		if pos + 1 > len then len = pos + 1 end
	end
end
rec.counts = kcounts_string(cs, len)
kwrite(key, rec, #v)
kevict(tonumber(ARGV[4]), {[key] = true})
ksave()
return 1
`)

// readScript reads the history for a subscription's replay or a node's
// resynchronisation.
//
// ARGV: base, candidate epoch, ttl ms, mode ("since", "latest" or
// "resync"), the caller's epoch, after (a seq; for "latest" a count),
// bound (for "resync": entries above this seq are left out; 0: none),
// reset latest (for "since": a reset returns this many newest events, 0:
// all), max bytes (for "since" and "latest": the page's size, 0: the
// whole replay), then topics.
//
// For "resync", returns {epoch, head, complete, entries...}: complete
// holds a '1' or '0' per topic, whether every event of it after "after"
// is retained, or is "E" when "after" is not of the hub's epoch.
//
// For "since" and "latest", returns {epoch, head, status, entries...}:
// the replay's entries in seq order, each once, where status holds 'R'
// for a reset and 'M' when the replay goes on after the entries (a page).
// A replay starts after the resume point, or, for a reset or the newest
// events, after the topics' horizon: the newest event any of them lost.
// A page is read by walking the topics' lists together from there, in
// seq order, until the next entry would take the page's stream forms past
// max bytes, so that it costs Redis and the caller a page, never the
// whole replay.
var readScript = goredis.NewScript(luaLib + luaRead + readBody)

// luaRead is what the scripts that read the history share (readScript
// and patternScript): the reading of their first nine ARGV, as
// readScript describes them, the answer being built (out), and the walks
// of the topics' lists.
const luaRead = `
local ttl = tonumber(ARGV[3])
local mode = ARGV[4]
local after = tonumber(ARGV[6])
local bound = tonumber(ARGV[7])
local reset_latest = tonumber(ARGV[8])
local max_bytes = tonumber(ARGV[9])
local E = ensure(ARGV[2])
local seq, forgotten = SEQ, FORGOTTEN
local cutoff = -1
if ttl > 0 then cutoff = now_ms() - ttl end
if bound == 0 then bound = seq end
local last = k(E, 'last')

local out = {E, fmt(seq), ''}
local seen = {}
local function emit(e, s)
	if s <= bound and not seen[s] then
		seen[s] = true
		local f = full(E, e)
		if f then out[#out + 1] = f end
	end
end

-- prev_in returns the seq of the event of topic before list item e: the
-- head when the item's body went missing, so that nothing claims to be
-- complete that is not.
local function prev_in(e, topic)
	local f = full(E, e)
	return (f and prev_of(f, topic)) or seq
end

-- since returns whether every event of topic after c is retained, and
-- emits the retained ones.
local function since(topic, c)
	local key = tk(E, topic)
	local idx = redis.call('LLEN', key)
	local chunk = 16
	local found = {}
	while idx > 0 do
		local from = math.max(0, idx - chunk)
		local part = redis.call('LRANGE', key, from, idx - 1)
		local stop = false
		for j = #part, 1, -1 do
			local s, tm = head(part[j])
			if s <= c or tm < cutoff then stop = true break end
			found[#found + 1] = part[j]
		end
		if stop then break end
		idx = from
		chunk = chunk * 2
	end
	local complete
	if #found > 0 then
		complete = prev_in(found[#found], topic) <= c
	else
		local l = redis.call('ZSCORE', last, topic)
		if l then complete = tonumber(l) <= c else complete = forgotten <= c end
	end
	if complete then
		for j = #found, 1, -1 do emit(found[j], (head(found[j]))) end
	end
	return complete
end

-- The replay of a subscription ("since" and "latest") walks the lists of
-- its topics together, in seq order, from where it starts: a list is
-- {topic, key, len}.

-- search returns the index of the first entry of list l for which ok
-- holds (it holds for every later one too), and that entry; the list's
-- length when there is none.
local function search(l, ok)
	local n = l.len
	if n == 0 then return 0 end
	local e = redis.call('LINDEX', l.key, n - 1)
	if not ok(e) then return n end
	if n == 1 then return 0, e end
	local f = redis.call('LINDEX', l.key, 0)
	if ok(f) then return 0, f end
	local lo, hi = 1, n - 1 -- ok fails at lo - 1 and holds at hi, whose entry is e
	while lo < hi do
		local mid = math.floor((lo + hi) / 2)
		local m = redis.call('LINDEX', l.key, mid)
		if ok(m) then hi, e = mid, m else lo = mid + 1 end
	end
	return hi, e
end

-- horizon returns the seq of the newest event of list l's topic that left
-- the history (evicted, expired or forgotten): every later one is
-- retained.
local function horizon(l)
	local i, e = l.len, nil
	if cutoff < 0 then
		if l.len > 0 then i, e = 0, redis.call('LINDEX', l.key, 0) end
	else
		i, e = search(l, function(x)
			local _, tm = head(x)
			return tm >= cutoff
		end)
	end
	if i < l.len then return prev_in(e, l.topic) end
	local s = redis.call('ZSCORE', last, l.topic)
	if s then return tonumber(s) end
	return forgotten
end

-- parse returns the seq of entry e and the length of its stream form, id
-- line included.
local function parse(e)
	local _, stop, ep, s, n = string.find(e, '^(%S+) (%d+) %d+ %d+ (%d+)\n')
	local pos = stop + 1
	for _ = 1, tonumber(n) do pos = string.find(e, '\n', pos, true) + 1 end
	return tonumber(s), #'id: -\n' + #ep + #s + #e - pos + 1
end

-- A cursor walks the entries of list l from index from to index to,
-- backwards when to is below from, reading them in growing chunks. Its
-- e, seq and wire are its entry, the entry's seq and the length of its
-- stream form; e and seq are nil past its end.
local function cursor(l, from, to)
	local step = 1
	if to < from then step = -1 end
	return {key = l.key, next = from, to = to, step = step, pos = 0, left = 0, chunk = 4}
end

-- advance moves the cursor to its next entry (to its first, at first).
local function advance(c)
	if c.left > 1 then
		c.pos, c.left = c.pos + c.step, c.left - 1
	else
		c.left = 0
		local rest = (c.to - c.next) * c.step + 1
		if rest > 0 then
			local a = c.next
			local b = a + (math.min(c.chunk, rest) - 1) * c.step
			if c.step > 0 then
				c.buf = redis.call('LRANGE', c.key, a, b)
				c.pos = 1
			else
				c.buf = redis.call('LRANGE', c.key, b, a)
				c.pos = #c.buf
			end
			c.left = #c.buf
			c.next = b + c.step
			c.chunk = math.min(c.chunk * 2, 256)
		end
	end
	if c.left > 0 then
		local raw = c.buf[c.pos]
		c.e = full(E, raw)
		if c.e then
			c.seq, c.wire = parse(c.e)
		else -- its body went missing: passed over
			c.e, c.seq, c.wire = raw, (head(raw)), 0
		end
	else
		c.e, c.seq, c.buf = nil, nil, nil
	end
end

-- A heap holds cursors by the seq of their entries, the oldest on top,
-- or the newest when its newest is set: walking the lists of many topics
-- together costs a few steps per entry.
local function above(h, a, b)
	if h.newest then return a.seq > b.seq end
	return a.seq < b.seq
end

-- down moves the cursor at i down the heap to its place.
local function down(h, i)
	local n = #h
	while true do
		local l, m = 2 * i, i
		if l <= n and above(h, h[l], h[m]) then m = l end
		if l + 1 <= n and above(h, h[l + 1], h[m]) then m = l + 1 end
		if m == i then return end
		h[i], h[m] = h[m], h[i]
		i = m
	end
end

-- push starts cursor c and adds it to the heap, unless it has no entry.
local function push(h, c)
	advance(c)
	if not c.seq then return end
	local i = #h + 1
	h[i] = c
	while i > 1 do
		local p = math.floor(i / 2)
		if not above(h, h[i], h[p]) then return end
		h[i], h[p] = h[p], h[i]
		i = p
	end
end

-- pass moves past the entry on top of the heap every cursor that is at
-- it: an event of several topics is in each of their lists.
local function pass(h)
	local s = h[1].seq
	while h[1] and h[1].seq == s do
		local c = h[1]
		advance(c)
		if not c.seq then
			h[1] = h[#h]
			h[#h] = nil
		end
		if h[1] then down(h, 1) end
	end
end

-- latest_start returns the seq after which the n newest entries of the
-- lists newer than floor begin, or floor when there are n or fewer.
local function latest_start(lists, n, floor)
	local total, only = 0, nil
	for _, l in ipairs(lists) do
		total = total + l.len
		if l.len > 0 then only = (only == nil) and l or false end
	end
	if n <= 0 or total <= n then return floor end
	if only then -- one list: its n-th newest entry, without a walk
		return math.max(floor, head(redis.call('LINDEX', only.key, only.len - n)) - 1)
	end
	local h = {newest = true}
	for _, l in ipairs(lists) do
		if l.len > 0 then push(h, cursor(l, l.len - 1, 0)) end
	end
	for i = 1, n do
		if not h[1] or h[1].seq <= floor then return floor end
		if i == n then return h[1].seq - 1 end
		pass(h)
	end
end

-- page emits the entries of the lists after seq start, oldest first and
-- each once, until the next one would take their stream forms past
-- max_bytes (at least one), and returns whether entries remain. With
-- max_bytes 0 it emits them all, unordered. A list with a min index is
-- read from it on at the earliest.
local function page(lists, start, max_bytes)
	local h = {}
	local after_start = function(x) return (head(x)) > start end
	for _, l in ipairs(lists) do
		local i = math.max(search(l, after_start), l.min or 0)
		if i < l.len and max_bytes <= 0 then
			for _, e in ipairs(redis.call('LRANGE', l.key, i, -1)) do emit(e, (head(e))) end
		elseif i < l.len then
			push(h, cursor(l, i, l.len - 1))
		end
	end
	local used = 0
	while h[1] do
		local c = h[1]
		if used > 0 and used + c.wire > max_bytes then return true end
		if not is_stub(c.e) then out[#out + 1] = c.e end
		used = used + c.wire
		pass(h)
	end
	return false
end
`

// readBody is readScript's own part.
const readBody = `
local topics = {}
for j = 10, #ARGV do topics[#topics + 1] = ARGV[j] end

if mode == 'resync' then
	if ARGV[5] ~= E or after > seq then
		out[3] = 'E'
		return out
	end
	local flags = {}
	for _, t in ipairs(topics) do
		flags[#flags + 1] = since(t, after) and '1' or '0'
	end
	out[3] = table.concat(flags)
	return out
end

if mode == 'latest' and after <= 0 then return out end
local lists, hz = {}, 0
for _, t in ipairs(topics) do
	local l = {topic = t, key = tk(E, t)}
	l.len = redis.call('LLEN', l.key)
	lists[#lists + 1] = l
	hz = math.max(hz, horizon(l))
end
local start, status = after, ''
if mode == 'latest' then
	start = latest_start(lists, after, hz)
elseif ARGV[5] ~= E or after > seq or hz > after then
	-- a reset: the newest events that follow the horizon instead
	start, status = latest_start(lists, reset_latest, hz), 'R'
end
if page(lists, start, max_bytes) then status = status .. 'M' end
out[3] = status
return out
`

// stateScript reports a hub's epoch and seq, or its figures, and starts
// an epoch when it has none, or, when the hub's seq in epoch ARGV[3] is
// below ARGV[4], a new one: a failover rolled its history back. It writes
// nothing unless something changed.
//
// ARGV: base, candidate epoch, epoch seen, seq seen, ttl ms, max bytes,
// durable ("1" when the server loses no write in a restart, "0" when it
// may, "" unknown; see ensure), mode:
//
//	probe   the nodes' periodic check: epoch and seq only, without the
//	        run id (a few reads)
//	run     probe with the run id read (see ensure)
//	stats   the figures, expired events and the keys a day old dropped
//	        first, and a few topics' lists looked for (see sample)
//	check   stats, with the run id read and written (the check when a
//	        hub opens)
//
// Returns {epoch, seq, due} for probe and run, and {epoch, seq, bytes,
// events, topics, idempotency keys, idempotency bytes, cost, due} for
// stats and check (cost: what the history costs Redis, estimated), where due is "1" when the janitor has work to do that no
// publish of the node announced (see janitor_due).
var stateScript = goredis.NewScript(luaLib + `
local mode = ARGV[8]
local light = mode == 'probe' or mode == 'run'
local runmode = 'skip'
if mode == 'run' then runmode = 'force' elseif mode == 'check' then runmode = 'check' end
local E = ensure(ARGV[2], runmode, light)
if ARGV[7] ~= '' and (ARGV[7] == '1') ~= DURABLE then
	redis.call('HSET', meta, 'durable', ARGV[7])
end
if E == ARGV[3] and SEQ < tonumber(ARGV[4]) then
	E = restart(E, ARGV[2])
end
local ttl = tonumber(ARGV[5])
if light then return {E, fmt(SEQ), janitor_due(ttl)} end
if ttl > 0 then
	trim(E, ttl, tonumber(ARGV[6]), 1000)
	if IDLED then forget(E) end
end
sample(E)
save()
kexpire(now_ms(), 1000)
ksave()
return {E, fmt(SEQ), fmt(BYTES), fmt(EVENTS), tostring(redis.call('ZCARD', k(E, 'first'))),
	tostring(redis.call('LLEN', IQ)), fmt(IBYTES), fmt(COST), janitor_due(ttl)}
`)

// trimScript applies the history limits (all of them when ARGV[5] is
// "all", else age and bytes), forgets idle topics and the idempotency keys
// a day old or over the budget, and deletes part of the keys of a former
// epoch. It writes nothing unless something changed.
//
// ARGV: base, candidate epoch, history events, ttl ms, max bytes, scope,
// the idempotency records' budget.
//
// Returns when it is due again, in ms from now (0: it has work left), or
// -1 when nothing it knows of will fall due (no event will expire, no
// key will be a day old): the next event to expire by the ttl, the next
// idempotency key a day old, the next renewal of the keys' expiry. What
// other nodes or Redis's eviction change is not foreseen: the janitor
// also runs when its node publishes, and at a slow pace.
var trimScript = goredis.NewScript(luaLib + `
local E = ensure(ARGV[2], 'skip')
local max_events = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local budget = 20000
local first = k(E, 'first')
local due = -1
local function due_at(ms, now)
	local d = math.max(0, ms - now)
	if due < 0 or d < due then due = d end
end

-- Keys evicted by Redis (maxmemory) leave the figures counting what they
-- held. A few topics are sampled each time; when a list is missing, or a
-- script found keys missing (meta's audit), the figures, the refs of the
-- events of several topics and the first zset are recounted from the
-- lists: this costs a read of the whole history, but only after keys
-- were lost.
sample(E)
if SUSPECT or AUDIT then
	local seen, refs, bytes, events, cost = {}, {}, 0, 0, 0
	for _, t in ipairs(redis.call('ZRANGE', first, 0, -1)) do
		local es = redis.call('LRANGE', tk(E, t), 0, -1)
		if #es == 0 then
			redis.call('ZREM', first, t)
			redis.call('ZADD', k(E, 'idle'), redis.call('ZSCORE', k(E, 'last'), t) or SEQ, t)
			IDLED = true
		else
			redis.call('ZADD', first, (head(es[1])), t)
			cost = cost + list_cost(E, t) + zset_cost(t)
		end
		for _, e in ipairs(es) do
			local s, _, size, n = head(e)
			cost = cost + item_cost(#e)
			if not seen[s] then
				seen[s] = true
				bytes, events = bytes + size, events + 1
				if n > 1 then cost = cost + shared_cost(size) end
			end
			if n > 1 then refs[s] = (refs[s] or 0) + 1 end
		end
	end
	for _, t in ipairs(redis.call('ZRANGE', k(E, 'idle'), 0, -1)) do cost = cost + zset_cost(t) end
	-- the names zset, from the last one (it may be missing, evicted or
	-- written by an older version)
	local nk = k(E, 'names')
	redis.call('DEL', nk)
	local known = redis.call('ZRANGE', k(E, 'last'), 0, -1)
	for a = 1, #known, 500 do
		local args = {}
		for x = a, math.min(#known, a + 499) do
			args[#args + 1] = 0
			args[#args + 1] = known[x]
		end
		redis.call('ZADD', nk, unpack(args))
	end
	local rk = k(E, 'refs')
	redis.call('DEL', rk)
	local args = {}
	for s, n in pairs(refs) do
		args[#args + 1] = s
		args[#args + 1] = n
		if #args >= 1000 then
			redis.call('HSET', rk, unpack(args))
			args = {}
		end
	end
	if #args > 0 then redis.call('HSET', rk, unpack(args)) end
	local bk = k(E, 'body')
	for _, s in ipairs(redis.call('HKEYS', bk)) do
		if not refs[tonumber(s)] then redis.call('HDEL', bk, s) end
	end
	BYTES, EVENTS, COST, SUSPECT = bytes, events, cost, false
	if AUDIT then redis.call('HDEL', meta, 'audit') end
	AUDIT = false
end
if ARGV[6] == 'all' then
	local ts = redis.call('ZRANGE', first, 0, -1)
	for _, t in ipairs(ts) do
		local n = redis.call('LLEN', tk(E, t))
		if n > max_events then
			local pend = {seqs = {}, by = {}}
			popn(E, t, n - max_events, pend)
			drop_shared(E, pend)
			local fs = front(E, t)
			if fs then redis.call('ZADD', first, fs, t) end
			budget = budget - (n - max_events)
		end
	end
end
local left, oldest_tm = trim(E, ttl, tonumber(ARGV[5]), math.max(budget, 1000))
forget(E)
save()
local tnow = now_ms()
if left <= 0 and EVENTS > 0 then
	due_at(tnow, tnow)
elseif ttl > 0 and oldest_tm then
	due_at(oldest_tm + ttl + 1, tnow) -- the oldest event expires
end
kexpire(tnow, 20000)
if KNEXT then due_at(KNEXT, tnow) end
kevict(tonumber(ARGV[7]), nil)
ksave()
-- Every key of the hub expires (keyttl) unless a node runs the hub: the
-- hub's own keys get their expiry here when they have none (they may
-- have been created since); every keyttl / 4, it is renewed for all of
-- them, and, a thousand at a time, for the topics' lists (which get
-- theirs when created).
local kt = keyttl(ttl)
local hubkeys = {meta, B .. ':old', IQ, k(E, 'last'), k(E, 'names'), first, k(E, 'idle'), k(E, 'refs'), k(E, 'body')}
for _, name in ipairs(hubkeys) do
	if redis.call('PTTL', name) == -1 then redis.call('PEXPIRE', name, kt) end
end
local rcur, refreshed = RCUR, REFRESHED
if rcur < 0 and tnow - refreshed >= kt / 4 then
	for _, name in ipairs(hubkeys) do redis.call('PEXPIRE', name, kt) end
	refreshed = tnow
	redis.call('HSET', meta, 'refreshed', refreshed)
	rcur = 0
end
if rcur >= 0 then
	local ts = redis.call('ZRANGE', first, rcur, rcur + 999)
	for _, t in ipairs(ts) do redis.call('PEXPIRE', tk(E, t), kt) end
	if #ts < 1000 then rcur = -1 else rcur = rcur + 1000 end
	redis.call('HSET', meta, 'rcur', rcur)
end
if rcur >= 0 then due_at(tnow, tnow) else due_at(refreshed + kt / 4, tnow) end

-- a former epoch's keys, a hundred topics at a time
local old = redis.call('LINDEX', B .. ':old', 0)
if old then
	local ts = redis.call('ZRANGE', k(old, 'last'), 0, 99)
	for _, t in ipairs(ts) do
		redis.call('DEL', tk(old, t))
		redis.call('ZREM', k(old, 'last'), t)
	end
	if #ts < 100 then
		redis.call('DEL', k(old, 'last'), k(old, 'names'), k(old, 'first'), k(old, 'idle'), k(old, 'refs'), k(old, 'body'))
		redis.call('LPOP', B .. ':old')
	end
	due_at(tnow, tnow) -- more of it, or another former epoch, perhaps
end
return due
`)
