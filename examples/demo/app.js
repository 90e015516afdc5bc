// caddy-sse demo: one EventSource, its state, every event as it arrives,
// and a form that publishes through the demo's sse_publish route.
(() => {
	"use strict";
	const $ = (id) => document.getElementById(id);
	const params = new URLSearchParams(location.search);
	const eventsPath = params.get("events") || "/events";
	const publishPath = params.get("publish") || "/publish";
	if (params.get("topics")) $("topics").value = params.get("topics");

	let source = null;
	let count = 0;
	let reconnects = 0;
	let wasOpen = false;

	function setState(state) {
		$("state").className = "state " + state;
		$("state-text").textContent = state;
		document.body.dataset.state = state;
	}

	function show(kind, type, data, id) {
		$("empty").hidden = true;
		const li = document.createElement("li");
		li.className = kind;
		const time = document.createElement("span");
		time.className = "time";
		time.textContent = new Date().toLocaleTimeString([], { hour12: false }) +
			"." + String(new Date().getMilliseconds()).padStart(3, "0");
		const badge = document.createElement("span");
		badge.className = "type";
		badge.textContent = type;
		const body = document.createElement("span");
		body.className = "data";
		body.textContent = data;
		if (id) {
			const small = document.createElement("span");
			small.className = "id";
			small.textContent = "id " + id;
			body.appendChild(small);
		}
		li.append(time, badge, body);
		$("events").prepend(li);
		while ($("events").children.length > 200) $("events").lastChild.remove();
	}

	function onEvent(e) {
		count++;
		$("count").textContent = count;
		$("last-id").textContent = e.lastEventId || "—";
		if (e.type === "reset") {
			let sent = "";
			try { sent = JSON.parse(e.data).last_event_id; } catch (_) { /* keep empty */ }
			show("reset", "reset", "History since " + (sent || "your last event") +
				" is gone (server restarted or events expired); what is retained follows.", "");
			return;
		}
		show("event", e.type, e.data, e.lastEventId);
	}

	function subscribe() {
		if (source) source.close();
		const topics = $("topics").value.split(",").map((t) => t.trim()).filter(Boolean);
		const url = eventsPath + "?" + topics.map((t) => "topic=" + encodeURIComponent(t)).join("&");
		$("url").textContent = url;
		wasOpen = false;
		setState("connecting");
		source = new EventSource(url);
		source.onopen = () => {
			if (wasOpen) reconnects++;
			wasOpen = true;
			$("reconnects").textContent = reconnects;
			setState("open");
		};
		source.onerror = () => {
			setState(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
		};
		source.onmessage = onEvent;
		// named event types need their own listeners; listen to the reset
		// event and to whatever type the form publishes
		source.addEventListener("reset", onEvent);
		for (const t of knownTypes) source.addEventListener(t, onEvent);
	}

	const knownTypes = new Set();
	function listenFor(type) {
		if (!type || type === "message" || type === "reset" || knownTypes.has(type)) return;
		knownTypes.add(type);
		if (source) source.addEventListener(type, onEvent);
	}
	for (const t of (params.get("types") || "greeting,update,price,log,notification").split(",")) listenFor(t);

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
		try {
			const resp = await fetch(publishPath, { method: "POST", body });
			const answer = await resp.json();
			$("publish-result").textContent = resp.ok
				? "published " + answer.id + " to " + answer.subscribers + " subscriber(s)"
				: "refused: " + answer.error;
		} catch (err) {
			$("publish-result").textContent = "failed: " + err;
		}
	});

	$("clear").addEventListener("click", () => {
		$("events").replaceChildren();
		$("empty").hidden = false;
	});

	window.demo = { get source() { return source; }, subscribe };
	subscribe();
})();
