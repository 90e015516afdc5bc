// caddy-sse demo: one EventSource, its state, every event as it arrives,
// the connection's ups and downs, and a form that publishes through the
// demo's sse_publish route. Plain JavaScript, no build step.
//
// Query parameters: ?topics=a,b (what to subscribe to), ?types=x,y (event
// types to listen for besides the usual ones: EventSource only hands
// typed events to listeners registered for their type), ?events= and
// ?publish= (the routes' paths).
//
// A site whose sse route has a token block: give the page the URL of your
// back end's token endpoint, <body data-token-url="/sse-token"> (it
// answers a token as text; see docs/tokens.md). The page then fetches a
// token before it subscribes, and a fresh one whenever its stream ends
// with an expired event, resuming from the event's last_event_id; and
// if the server refuses the stream (a 401), it tries again with a fresh
// token 5 s later.
//
// Who is here: the page also asks for $presence/<its first topic> and
// shows its members' count, kept up to date by the join and leave
// events. Those events have no id: the stream's last event id is still
// that of the real events. The demo has no login, so the page sends a
// made-up id per browser as ?me= (the route's presence placeholder).
(() => {
	"use strict";
	const $ = (id) => document.getElementById(id);
	const params = new URLSearchParams(location.search);
	const eventsPath = params.get("events") || "/events";
	const publishPath = params.get("publish") || "/publish";
	const tokenURL = document.body.dataset.tokenUrl || ""; // none: subscribe without a token
	if (params.get("topics")) $("topics").value = params.get("topics");
	$("curl").textContent = "curl -d topic=demo -d 'data=hi' " + new URL(publishPath, location.href);

	const stateNames = { connecting: "Connecting", open: "Open", reconnecting: "Reconnecting", closed: "Closed" };
	const maxRows = 200;
	let source = null;
	let count = 0;
	let reconnects = 0;
	let wasOpen = false;
	let lastSeen = ""; // the id of the last event this page received
	let resumedFrom = null; // the last_event_id the current source was opened with, after an expired token
	let explained = false; // the server said why the stream ends (expired, disconnect)
	let generation = 0; // the current subscribe() call: a token fetched for an older one is dropped
	const me = visitor();
	let here = new Set(); // the members of the first topic, from the presence events
	let hereCount = 0; // their exact number (the list may be capped)

	// visitor returns this browser's made-up id, the same in every tab.
	function visitor() {
		try {
			let id = localStorage.getItem("caddy-sse-demo-me");
			if (!id) {
				id = "visitor-" + Math.random().toString(36).slice(2, 8);
				localStorage.setItem("caddy-sse-demo-me", id);
			}
			return id;
		} catch (_) {
			return "visitor-" + Math.random().toString(36).slice(2, 8);
		}
	}

	function showHere() {
		$("here").textContent = hereCount + " here";
	}

	// onPresence keeps the count of who is here: a presence event is a
	// snapshot ({topic, count, members}), join and leave ({topic, member})
	// change it.
	function onPresence(e) {
		let d;
		try { d = JSON.parse(e.data); } catch (_) { return; }
		if (e.type === "presence") {
			here = new Set(d.members);
			hereCount = d.count;
		} else if (e.type === "join" && !here.has(d.member)) {
			here.add(d.member);
			hereCount++;
		} else if (e.type === "leave") {
			here.delete(d.member);
			hereCount = Math.max(0, hereCount - 1);
		}
		showHere();
	}

	function setState(state) {
		$("state").className = "state " + state;
		$("state-text").textContent = stateNames[state];
		document.body.dataset.state = state;
	}

	function clock() {
		const now = new Date();
		return now.toLocaleTimeString([], { hour12: false }) + "." + String(now.getMilliseconds()).padStart(3, "0");
	}

	function el(tag, className, text) {
		const e = document.createElement(tag);
		if (className) e.className = className;
		if (text !== undefined) e.textContent = text;
		return e;
	}

	// A stable hue per event type, so that each type keeps its colour.
	function hue(type) {
		let h = 0;
		for (const c of type) h = (h * 31 + c.codePointAt(0)) % 360;
		return h;
	}

	// row adds a line to the log. kind: event, reset or system.
	function row(kind, type, data, id) {
		$("empty").hidden = true;
		const li = el("li", kind);
		const badge = el("span", "type", type);
		if (kind === "event") badge.style.setProperty("--hue", type === "message" ? 205 : hue(type));
		const body = el("div", "body");
		body.append(el("span", "data", data));
		if (id) body.append(el("span", "id", "id " + id));
		li.append(el("time", "time", clock()), badge, body);
		$("events").prepend(li);
		while ($("events").children.length > maxRows) $("events").lastChild.remove();
	}

	function onEvent(e) {
		count++;
		$("count").textContent = count;
		if (e.lastEventId) {
			lastSeen = e.lastEventId;
			$("last-id").textContent = e.lastEventId;
		}
		if (e.type === "reset") {
			let sent = "";
			try { sent = JSON.parse(e.data).last_event_id; } catch (_) { /* keep it empty */ }
			row("reset", "reset", "The events after " + (sent || "your last one") +
				" are gone: the server restarted or they expired. What it still has follows; an app would reload its state now.");
			return;
		}
		row("event", e.type, e.data, e.lastEventId);
	}

	// subscribe opens the stream: afresh (from the form), or, with
	// resumeFrom (a string, perhaps empty), again after an expired token,
	// from that event id on.
	async function subscribe(resumeFrom) {
		if (source) source.close();
		source = null;
		const current = ++generation;
		const resuming = typeof resumeFrom === "string";
		const topics = $("topics").value.split(",").map((t) => t.trim()).filter(Boolean);
		let url = eventsPath + "?" + topics.map((t) => "topic=" + encodeURIComponent(t)).join("&");
		if (topics.length) url += "&topic=" + encodeURIComponent("$presence/" + topics[0]) + "&me=" + encodeURIComponent(me);
		if (resuming && resumeFrom) url += "&last_event_id=" + encodeURIComponent(resumeFrom);
		$("url").textContent = url + (tokenURL ? "&token=…" : "");
		if (!resuming) wasOpen = false;
		resumedFrom = resuming ? resumeFrom : null;
		setState(resuming ? "reconnecting" : "connecting");
		if (tokenURL) {
			let token;
			try {
				const resp = await fetch(tokenURL);
				if (!resp.ok) throw new Error(resp.status + " " + resp.statusText);
				token = (await resp.text()).trim();
			} catch (err) {
				if (current !== generation) return;
				setState("closed");
				row("system", "token", "No token from " + tokenURL + " (" + err.message + "). Trying again in 5 s.");
				later(5000, resumeFrom);
				return;
			}
			if (current !== generation) return; // subscribed again meanwhile
			url += "&token=" + encodeURIComponent(token);
		}
		explained = false;
		const es = new EventSource(url);
		source = es;
		let openedAt = 0;
		es.onopen = () => {
			openedAt = performance.now();
			explained = false;
			if (wasOpen) {
				reconnects++;
				$("reconnects").textContent = reconnects;
				let how = lastSeen
					? "Back. The browser sent Last-Event-ID " + lastSeen + "; whatever was missed follows."
					: "Back. The browser sent the Last-Event-ID it got on connecting; whatever was missed follows.";
				if (resumedFrom !== null) {
					how = resumedFrom
						? "Back with a fresh token, from last_event_id " + resumedFrom + "; whatever was missed follows."
						: "Back with a fresh token.";
					resumedFrom = null;
				}
				row("system", "reconnected", how);
			} else {
				row("system", "connected", "Subscribed to " + topics.join(", ") + ".");
			}
			wasOpen = true;
			setState("open");
		};
		es.onerror = () => {
			if (es !== source) return;
			if (es.readyState === EventSource.CLOSED) {
				setState("closed");
				if (tokenURL) {
					row("system", "closed", "The server refused the stream (its token?). Trying again with a fresh token in 5 s.");
					later(5000, wasOpen ? lastSeen : resumeFrom);
					return;
				}
				row("system", "closed", "The browser gave up on this stream (an error status or a refused origin).");
				return;
			}
			if (document.body.dataset.state === "open" && !explained) {
				row("system", "disconnected", "The stream ended. The browser reconnects by itself after the server's retry hint.");
			}
			setState("reconnecting");
		};
		// Events without a type go to onmessage; typed events only to the
		// listeners of their type.
		es.onmessage = onEvent;
		es.addEventListener("reset", onEvent);
		for (const t of ["presence", "join", "leave"]) es.addEventListener(t, onPresence);
		for (const t of knownTypes) es.addEventListener(t, onEvent);
		// The server ends a stream with one of these: its token expired
		// (data {"last_event_id": ...}), or it was disconnected
		// (data {"reason": ...}; the browser comes back after the long
		// retry hint that comes with it).
		es.addEventListener("expired", (e) => {
			if (es !== source) return;
			const from = field(e.data, "last_event_id") || lastSeen;
			explained = true;
			if (!tokenURL) {
				row("system", "expired", "The stream's token expired, and this page has no token URL to renew it " +
					"(data-token-url): the browser tries again after the server's retry hint.");
				return;
			}
			// A token that had expired on arrival (clocks apart?) is not
			// renewed at once again and again.
			const wait = performance.now() - openedAt < 1000 ? 3000 : 0;
			es.close();
			setState("reconnecting");
			row("system", "expired", "The token expired: fetching a fresh one" + (wait ? " in 3 s" : "") +
				", to resume " + (from ? "after " + from : "from now") + ".");
			later(wait, from);
		});
		es.addEventListener("disconnect", (e) => {
			if (es !== source) return;
			explained = true;
			row("system", "disconnected", "disconnected by the server: " + (field(e.data, "reason") || "no reason given"));
		});
	}

	// later subscribes again after ms, resuming from resumeFrom, unless
	// the page subscribed anew meanwhile.
	function later(ms, resumeFrom) {
		const current = generation;
		setTimeout(() => { if (current === generation) subscribe(resumeFrom); }, ms);
	}

	// field returns a string field of a JSON object, or "".
	function field(json, name) {
		try {
			const v = JSON.parse(json)[name];
			return typeof v === "string" ? v : "";
		} catch (_) {
			return "";
		}
	}

	const knownTypes = new Set();
	function listenFor(type) {
		if (!type || ["message", "reset", "presence", "join", "leave"].includes(type) || knownTypes.has(type)) return;
		knownTypes.add(type);
		$("known-types").append(el("option", "", type));
		if (source) source.addEventListener(type, onEvent);
	}
	const types = params.get("types") || "greeting,update,price,log,notification,created,tick";
	for (const t of types.split(",")) listenFor(t.trim());

	$("topics-form").addEventListener("submit", (e) => {
		e.preventDefault();
		subscribe();
	});

	$("publish-form").addEventListener("submit", async (e) => {
		e.preventDefault();
		const form = new FormData(e.target);
		listenFor(form.get("event"));
		const body = new URLSearchParams();
		for (const [k, v] of form) if (v !== "") body.append(k, v);
		const result = $("publish-result");
		result.className = "";
		try {
			const resp = await fetch(publishPath, { method: "POST", body });
			const answer = await resp.json();
			result.className = resp.ok ? "ok" : "bad";
			result.textContent = resp.ok
				? "published " + answer.id + " to " + answer.subscribers + " subscriber" + (answer.subscribers === 1 ? "" : "s")
				: "refused: " + answer.error;
		} catch (err) {
			result.className = "bad";
			result.textContent = "failed: " + err.message;
		}
	});

	$("clear").addEventListener("click", () => {
		$("events").replaceChildren();
		$("empty").hidden = false;
	});

	window.demo = { get source() { return source; }, subscribe };
	subscribe();
})();
