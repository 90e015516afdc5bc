// The page side of the browser tests: it opens EventSources as the tests
// ask and records everything they do in one log, which the tests read over
// the DevTools protocol.
"use strict";
window.harness = (() => {
	const log = [];
	const sources = [];

	// record appends one entry: what happened to which source, when
	// (performance.now(), in ms) and the source's readyState at that time.
	function record(src, kind, fields) {
		log.push(Object.assign({
			src, kind, t: performance.now(), state: sources[src].readyState,
		}, fields));
	}

	function eventFields(e, via) {
		return { via, type: e.type, data: e.data, id: e.lastEventId, origin: e.origin };
	}

	// open creates an EventSource and returns its index. opts.types are
	// the event types to listen for with addEventListener, besides
	// onmessage; opts.withCredentials is passed on.
	function open(url, opts) {
		opts = opts || {};
		const src = sources.length;
		const es = new EventSource(url, { withCredentials: !!opts.withCredentials });
		sources.push(es);
		es.onopen = () => record(src, "open");
		es.onerror = () => record(src, "error");
		es.onmessage = (e) => record(src, "event", eventFields(e, "onmessage"));
		for (const type of opts.types || []) {
			es.addEventListener(type, (e) => record(src, "event", eventFields(e, "listener")));
		}
		return src;
	}

	// close closes a source, as a page does when it is done with it.
	function close(src) {
		sources[src].close();
		record(src, "closed");
	}

	// fetchText fetches url with init and reads the body until it contains
	// until, for at most ms milliseconds, then stops; it resolves to the
	// status and the text read, or to the error.
	async function fetchText(url, init, until, ms) {
		const abort = new AbortController();
		const timer = setTimeout(() => abort.abort(), ms);
		let status = 0;
		let text = "";
		try {
			const resp = await fetch(url, Object.assign({ signal: abort.signal }, init));
			status = resp.status;
			const reader = resp.body.getReader();
			const decoder = new TextDecoder();
			while (!text.includes(until)) {
				const { done, value } = await reader.read();
				if (done) break;
				text += decoder.decode(value, { stream: true });
			}
			abort.abort();
			return { status, text };
		} catch (err) {
			return { status, text, error: String(err) };
		} finally {
			clearTimeout(timer);
		}
	}

	return {
		open,
		close,
		fetchText,
		entries: (from) => log.slice(from || 0),
		states: () => sources.map((es) => es.readyState),
	};
})();
