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

	// eventFields describes an event; with summary, its data is only its
	// length and first 40 characters ("<length>:<start>"), so that large
	// events keep the log small.
	function eventFields(e, via, summary) {
		const data = summary ? e.data.length + ":" + e.data.slice(0, 40) : e.data;
		return { via, type: e.type, data, id: e.lastEventId, origin: e.origin };
	}

	// open creates an EventSource and returns its index. opts.types are
	// the event types to listen for with addEventListener, besides
	// onmessage; opts.withCredentials is passed on; opts.summary records
	// events' data in short (see eventFields).
	function open(url, opts) {
		opts = opts || {};
		const src = sources.length;
		const es = new EventSource(url, { withCredentials: !!opts.withCredentials });
		sources.push(es);
		es.onopen = () => record(src, "open");
		es.onerror = () => record(src, "error");
		es.onmessage = (e) => record(src, "event", eventFields(e, "onmessage", opts.summary));
		for (const type of opts.types || []) {
			es.addEventListener(type, (e) => record(src, "event", eventFields(e, "listener", opts.summary)));
		}
		return src;
	}

	// block keeps the page's main thread busy for ms milliseconds, from
	// the next task on: the page reads nothing meanwhile, as a page busy
	// with heavy work, or a slow device, does not.
	function block(ms) {
		setTimeout(() => {
			const end = performance.now() + ms;
			while (performance.now() < end) { /* busy */ }
		}, 0);
	}

	// readFor fetches url and reads its body for ms milliseconds, then
	// stops; it resolves to the status and every piece of the body with
	// the time it arrived (performance.now(), in ms).
	async function readFor(url, ms) {
		const abort = new AbortController();
		const timer = setTimeout(() => abort.abort(), ms);
		const pieces = [];
		let status = 0;
		try {
			const resp = await fetch(url, { signal: abort.signal });
			status = resp.status;
			const reader = resp.body.getReader();
			const decoder = new TextDecoder();
			for (;;) {
				const { done, value } = await reader.read();
				if (done) break;
				pieces.push({ t: performance.now(), text: decoder.decode(value, { stream: true }) });
			}
			return { status, pieces, error: "the body ended" };
		} catch (err) {
			return { status, pieces, error: abort.signal.aborted ? "" : String(err) };
		} finally {
			clearTimeout(timer);
		}
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
		block,
		readFor,
		entries: (from) => log.slice(from || 0),
		states: () => sources.map((es) => es.readyState),
	};
})();
