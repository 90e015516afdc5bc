package redis

import (
	goredis "github.com/redis/go-redis/v9"
)

// patternScript reads the history for a pattern subscription's replay
// (transport.PatternTransport.ReplayPatterns) or for a node's
// resynchronisation of the patterns it watches.
//
// A pattern with a literal part ("orders/*", "a/*/c": the segments
// before its first wildcard) finds its topics by name, in the names zset
// (ZRANGEBYLEX over that prefix); the others ("**", "*/x") by walking
// the last zset (topic -> seq of its newest event) by that seq, newest
// first. Either way the topics are then taken newest first, and the
// script stops as soon as the rest cannot matter: a topic whose newest
// event is at or below a seq has no event after it, and has lost none
// after it either. So a resumption from seq L looks only at the topics
// published to after L, and a reset, or the newest events, only at the
// topics published to last, down to where the replay starts (the newest
// event a matching topic lost, the MaxTopics+1-th topic).
//
// The bound is the scan limit: the topics found by name, all patterns
// together, and those the walk looks at (matching or not), each at most
// that many. A pattern with more topics by name walks instead. The
// topics the walk did not look at have no event after the seq of the
// first of them, so the replay starts after it, and is a reset, with
// TopicsCapped, when it had to go further.
//
// ARGV: base, candidate epoch, ttl ms, mode ("since", "latest", "per"
// or "resync"), the caller's epoch, after (a seq; for "latest" a
// count), bound (for "resync": entries above this seq are left out; 0:
// none), reset latest (for "since": a reset returns this many newest
// events), max bytes (the page's size, 0: the whole replay), max topics
// (0: no bound), scan limit, per topic (for "per": the newest events per
// topic), the number of patterns, the patterns, then topics.
//
// For "since", "latest" and "per", returns {epoch, head, status,
// entries...} as readScript does, status holding 'C' too when the topics
// were capped (transport.Replay.TopicsCapped). "per" gives the newest
// per-topic events of each topic (of the max topics published to last),
// those after the seq "after" when it is of the hub's epoch.
//
// For "resync", returns {epoch, head, status, entries...}: the retained
// entries after "after" (up to bound) of the topics that match a pattern
// and lost none of them. status is "E" when "after" is not of the hub's
// epoch; otherwise 'C' when the walk stopped at the scan limit, or a
// topic the hub forgot may have lost an event after "after" (the
// patterns' streams cannot be served in order), followed by "\n<topic>"
// for each matching topic that lost an event after it.
var patternScript = goredis.NewScript(luaLib + luaRead + patternBody)

const patternBody = `
local max_topics = tonumber(ARGV[10])
local scan_max = tonumber(ARGV[11])
local per_topic = tonumber(ARGV[12])
local np = tonumber(ARGV[13])

-- segments splits s at each '/', empty segments kept.
local function segments(s)
	local parts, pos = {}, 1
	while true do
		local sl = string.find(s, '/', pos, true)
		if not sl then
			parts[#parts + 1] = string.sub(s, pos)
			return parts
		end
		parts[#parts + 1] = string.sub(s, pos, sl - 1)
		pos = sl + 1
	end
end

-- A pattern is {segs, lit, prefix, kind}: its segments; lit, the
-- literal segments before its first wildcard, each with its '/' (nil
-- when it begins with one), by which the names zset finds its topics;
-- and for the common forms matched without splitting the topic, kind
-- 'all' for "**", 'rest' for "<prefix>**", 'one' for "<prefix>*", where
-- prefix is then lit.
local pats = {}
for j = 14, 13 + np do
	local p = ARGV[j]
	local x = {segs = segments(p)}
	local lit = ''
	for i, seg in ipairs(x.segs) do
		if seg == '*' or (seg == '**' and i == #x.segs) then
			if i > 1 then x.lit = lit end
			if i == #x.segs then
				if i == 1 and seg == '**' then x.kind = 'all' end
				if i > 1 and seg == '**' then x.kind = 'rest' end
				if i > 1 and seg == '*' then x.kind = 'one' end
				x.prefix = x.lit
			end
			break
		end
		lit = lit .. seg .. '/'
	end
	pats[#pats + 1] = x
end
local topics = {}
for j = 14 + np, #ARGV do topics[#topics + 1] = ARGV[j] end

-- matches tells whether topic matches the pattern of segments ps, as
-- access.Match does: '*' one segment, a last '**' one or more. It goes
-- along the topic without splitting it (pos: where its next segment
-- begins; past n + 1, none is left).
local function matches(ps, topic)
	local pos, n = 1, #topic
	for i, p in ipairs(ps) do
		if pos > n + 1 then return false end
		if p == '**' and i == #ps then return true end
		local sl = string.find(topic, '/', pos, true)
		local e = (sl or n + 1) - 1
		if p ~= '*' and (e - pos + 1 ~= #p or string.sub(topic, pos, e) ~= p) then return false end
		pos = e + 2
	end
	return pos == n + 2
end

-- quick tells whether topic matches pattern x of a common form, or nil
-- when x has another form.
local function quick(x, topic)
	if x.kind == 'all' then return true end
	if not x.kind then return nil end
	local n = #x.prefix
	if #topic < n or string.sub(topic, 1, n) ~= x.prefix then return false end
	return x.kind == 'rest' or not string.find(topic, '/', n + 1, true)
end

-- match tells whether topic matches pattern x.
local function match(x, topic)
	local q = quick(x, topic)
	if q == nil then q = matches(x.segs, topic) end
	return q
end

local function match_any(topic)
	for _, x in ipairs(pats) do
		if match(x, topic) then return true end
	end
	return false
end

-- The selection: the query's topics, and the known topics that match a
-- pattern, each once, as lists {topic, key, newest} (newest: the seq of
-- its newest event, nil when the hub does not know the topic), their
-- length and horizon read when needed.
local sel, lists = {}, {}
local function add(t, newest, plain)
	local l = sel[t]
	if l then return l end
	l = {topic = t, key = tk(E, t), newest = newest, plain = plain}
	sel[t] = l
	lists[#lists + 1] = l
	return l
end
local function len(l)
	if not l.len then l.len = redis.call('LLEN', l.key) end
	return l.len
end
local function hz(l)
	if not l.hz then
		len(l)
		l.hz = horizon(l)
	end
	return l.hz
end
for _, t in ipairs(topics) do
	local s = redis.call('ZSCORE', last, t)
	add(t, s and tonumber(s), true)
end
-- a topic the hub forgot may have matched a pattern: what it lost counts
local lost = 0
if np > 0 then lost = forgotten end

-- The topics of the patterns with a literal part are found by name in
-- the names zset, scan_max at most together; the others are found by
-- walking the last zset (see scan). Without a whole names zset (evicted,
-- or topics published by an older version), every pattern walks, and
-- the janitor is asked to rebuild it (the meta key's audit).
local indexed, walk = {}, false
if np > 0 then
	local names = k(E, 'names')
	local whole = redis.call('ZCARD', names) == redis.call('ZCARD', last)
	if not whole and not AUDIT then
		redis.call('HSET', meta, 'audit', 1)
		AUDIT = true
	end
	local budget, found = scan_max, {}
	for _, x in ipairs(pats) do
		local r = nil
		if whole and x.lit then
			r = redis.call('ZRANGEBYLEX', names, '[' .. x.lit, '[' .. x.lit .. '\255', 'LIMIT', 0, budget + 1)
			if #r > budget then r = nil end
		end
		if r then
			budget = budget - #r
			for _, t in ipairs(r) do
				if not found[t] and match(x, t) then
					local s = redis.call('ZSCORE', last, t)
					if s then indexed[#indexed + 1] = {topic = t, newest = tonumber(s)} end
					found[t] = true
				end
			end
		else
			walk = true
		end
	end
	table.sort(indexed, function(a, b) return a.newest > b.newest end)
end

-- scan goes through the topics that match a pattern by the seq of their
-- newest event, newest first, while it is above floor() and stop(seq)
-- does not hold, and hands them to visit: those found by name, and those
-- of a walk of the last zset (when a pattern needs it), which looks at
-- scan_max topics at most. It returns the newest seq of the topics the
-- walk did not look at when that matters (none of them has an event
-- after it), else 0.
local function scan(floor, stop, visit)
	local ii, rank, buf, bi, cut, ended = 1, 0, {}, 1, 0, not walk
	local seen_t = {}
	-- peek returns the walk's next topic and its seq, or nil
	local function peek()
		if ended then return nil end
		if bi > #buf then
			if rank >= scan_max then
				local nx = redis.call('ZREVRANGE', last, rank, rank, 'WITHSCORES')
				if #nx > 0 then cut = tonumber(nx[2]) end
				ended = true
				return nil
			end
			buf, bi = redis.call('ZREVRANGE', last, rank, math.min(rank + 255, scan_max - 1), 'WITHSCORES'), 1
			if #buf == 0 then
				ended = true
				return nil
			end
		end
		return buf[bi], tonumber(buf[bi + 1])
	end
	while true do
		local wt, ws = peek()
		local it = indexed[ii]
		local t, s, walked
		if it and (not ws or it.newest >= ws) then
			t, s, ii = it.topic, it.newest, ii + 1
		elseif ws then
			t, s, walked, bi, rank = wt, ws, true, bi + 2, rank + 1
		else
			break
		end
		if s <= cut then break end
		if s <= floor() or stop(s) then return 0 end
		if not seen_t[t] and (not walked or match_any(t)) then
			seen_t[t] = true
			visit(t, s)
		end
	end
	if cut > floor() then return cut end
	return 0
end

local function never() return false end

-- newer returns the lists whose newest event is after seq s.
local function newer(s)
	local ls = {}
	for _, l in ipairs(lists) do
		if l.newest and l.newest > s then
			len(l)
			ls[#ls + 1] = l
		end
	end
	return ls
end

if mode == 'resync' then
	if ARGV[5] ~= E or after > seq then
		out[3] = 'E'
		return out
	end
	local cut = scan(function() return after end, never, function(t, s) add(t, s) end)
	local status = {''}
	if cut > 0 or lost > after then status[1] = 'C' end
	for _, l in ipairs(lists) do
		if not since(l.topic, after) then status[#status + 1] = l.topic end
	end
	out[3] = table.concat(status, '\n')
	return out
end

if mode == 'per' then
	local from = after
	if ARGV[5] ~= E or after > seq then from = 0 end
	-- retained tells whether the topic of l has a retained event (its
	-- newest is then the seq of the last zset)
	local function retained(l)
		if len(l) == 0 then return false end
		if cutoff >= 0 then
			local _, tm = head(redis.call('LINDEX', l.key, -1))
			if tm < cutoff then return false end
		end
		return true
	end
	local floor, found, bound_seq = 0, 0, nil
	if max_topics <= 0 then floor = from end
	local cut = scan(function() return floor end, function(s)
		-- one more than max_topics tells that the topics are capped
		return max_topics > 0 and found > max_topics and s < bound_seq
	end, function(t, s)
		if retained(add(t, s)) then
			found = found + 1
			if found == max_topics then bound_seq = s end
		end
	end)
	local cands = {}
	for _, l in ipairs(lists) do
		if l.newest and retained(l) then cands[#cands + 1] = l end
	end
	table.sort(cands, function(a, b)
		if a.newest ~= b.newest then return a.newest > b.newest end
		return a.topic < b.topic
	end)
	local capped = cut > 0
	if max_topics > 0 and #cands > max_topics then
		for j = #cands, max_topics + 1, -1 do cands[j] = nil end
		capped = true
	end
	local live = function(x)
		local _, tm = head(x)
		return tm >= cutoff
	end
	for _, l in ipairs(cands) do
		l.min = math.max(0, l.len - per_topic)
		if cutoff >= 0 then l.min = math.max(l.min, (search(l, live))) end
	end
	local status = ''
	if capped then status = 'C' end
	if page(cands, from, max_bytes) then status = status .. 'M' end
	out[3] = status
	return out
end

if mode == 'latest' and after <= 0 then return out end

local status, capped = '', false
local valid = mode == 'since' and ARGV[5] == E and after <= seq
if valid then
	-- served in full when no topic lost an event after the resume point,
	-- the walk saw every topic published to since, and at most
	-- max_topics of them have events after it
	local found = 0
	local cut = scan(function() return after end, function()
		return max_topics > 0 and found > max_topics
	end, function(t, s)
		add(t, s)
		found = found + 1
	end)
	local ok, n = cut == 0 and lost <= after, 0
	for _, l in ipairs(lists) do
		if l.newest == nil or l.newest > after then
			if ok and hz(l) > after then ok = false end
			if l.newest then n = n + 1 end
		end
	end
	if ok and max_topics > 0 and n > max_topics then ok, capped = false, true end
	if cut > 0 then capped = true end
	if ok then
		if page(newer(after), after, max_bytes) then status = 'M' end
		out[3] = status
		return out
	end
end
if mode == 'since' then status = 'R' end

-- A reset, or the newest events: they start after the newest event a
-- topic lost (floor), after the newest event of the max_topics+1-th topic
-- published to last (cap), after the topics the walk did not look at
-- (cut), and where the newest count of the rest begin.
local count = reset_latest
if mode == 'latest' then count = after end
local floor = lost
for _, l in ipairs(lists) do
	if l.plain then floor = math.max(floor, hz(l)) end -- the walk sees to the others
end
local found = 0
local cut = scan(function() return floor end, function()
	return max_topics > 0 and found > max_topics
end, function(t, s)
	floor = math.max(floor, hz(add(t, s)))
	found = found + 1
end)
local cap = 0
if max_topics > 0 then
	local tops = {}
	for _, l in ipairs(lists) do
		if l.newest then tops[#tops + 1] = l.newest end
	end
	if #tops > max_topics then
		table.sort(tops, function(a, b) return a > b end)
		cap = tops[max_topics + 1]
	end
end
local start = math.max(floor, cap, cut)
local lt = -1
if count > 0 then lt = latest_start(newer(start), count, -1) end
if math.max(cap, cut) > math.max(floor, lt) then capped = true end
start = math.max(start, lt)
if capped then status = status .. 'C' end
if page(newer(start), start, max_bytes) then status = status .. 'M' end
out[3] = status
return out
`
