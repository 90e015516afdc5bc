// The page side of TestTokenRenewal. renewal.js, loaded after this, is the
// README's token-renewal snippet as it is; this records what it does, for
// the test to read over the DevTools protocol (renewal.state()). It
// defines onEvent, the page's handler that the snippet calls for each
// event, and wraps EventSource so that every source the snippet opens is
// logged with what happens to it.
"use strict";
window.renewal = (() => {
	const received = []; // every event onEvent got: {id, data}, in order
	const sources = []; // every EventSource the snippet opened, in order

	const lastReceived = () => (received.length ? received[received.length - 1].id : "");

	window.onEvent = (e) => received.push({ id: e.lastEventId, data: e.data });

	// Listeners added here, in the constructor, run before the snippet's.
	const Native = window.EventSource;
	window.EventSource = class extends Native {
		constructor(url, init) {
			super(url, init);
			const s = {
				url: String(url),
				lastBefore: lastReceived(), // the id of the last event the page had when it opened this
				opens: 0,
				messages: 0,
				errors: [], // the readyState at each error: 2 when the browser gave up
				expired: [], // each expired event: its data, and the last id the page had
			};
			sources.push(s);
			this.addEventListener("open", () => s.opens++);
			this.addEventListener("message", () => s.messages++);
			this.addEventListener("error", () => s.errors.push(this.readyState));
			this.addEventListener("expired", (e) => s.expired.push({ data: e.data, last: lastReceived() }));
		}
	};

	return { state: () => ({ received, sources }) };
})();
