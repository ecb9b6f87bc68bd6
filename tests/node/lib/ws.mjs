// WebSocket helpers for the realtime tests (not a test file itself). Built on the `ws` package
// (the same implementation the 2.0.33 client uses on Node 20, which has no global WebSocket).
import assert from "node:assert/strict";
import WebSocket from "ws";
import { ENDPOINT } from "./helpers.mjs";

export { WebSocket };

/** How long `WsPeer.next()` waits for a frame before failing (ms). */
export const FRAME_TIMEOUT = 5_000;

/** `ws://…/gateway/{actorId}{rest}` for the server under test. */
export function gatewayWsUrl(actorId, rest) {
	return `${ENDPOINT.replace(/^http/, "ws")}/gateway/${encodeURIComponent(actorId)}${rest}`;
}

/** The subprotocol that carries connection params (spec §8.1). */
export function connParamsProtocol(params) {
	return `rivet_conn_params.${encodeURIComponent(JSON.stringify(params))}`;
}

/** `{"body":{"tag":"ActionRequest",…}}` as the JSON text the 2.0.33 client sends (spec §8.3). */
export function actionRequest(id, name, args = []) {
	return JSON.stringify({
		body: { tag: "ActionRequest", val: { id: ["$BigInt", String(id)], name, args } },
	});
}

/** `{"body":{"tag":"SubscriptionRequest",…}}` (spec §8.3). */
export function subscriptionRequest(eventName, subscribe = true) {
	return JSON.stringify({ body: { tag: "SubscriptionRequest", val: { eventName, subscribe } } });
}

/**
 * A plain `ws` client socket that records everything: the 101 response headers, every frame in
 * order (`{binary, data}`: text frames as strings, binary frames as Buffers) and the close
 * code/reason. Frames are read in order with `next()`. Always `dispose()` it (in `finally`).
 */
export class WsPeer {
	constructor(url, protocols) {
		this.url = url;
		this.frames = [];
		this.cursor = 0;
		this.upgradeHeaders = null;
		this.errors = [];
		this.closeInfo = null;
		this.#waiter = null;
		this.ws = protocols === undefined ? new WebSocket(url) : new WebSocket(url, protocols);
		this.ws.on("upgrade", (res) => {
			this.upgradeHeaders = res.headers;
		});
		this.ws.on("unexpected-response", (_req, res) => {
			this.errors.push(new Error(`unexpected HTTP ${res.statusCode} instead of 101`));
			res.resume();
			this.ws.terminate();
		});
		this.ws.on("error", (err) => this.errors.push(err));
		this.ws.on("message", (data, isBinary) => {
			this.frames.push(
				isBinary
					? { binary: true, data: Buffer.isBuffer(data) ? Buffer.from(data) : Buffer.concat(data) }
					: { binary: false, data: data.toString("utf8") },
			);
			this.#wake();
		});
		this.closed = new Promise((resolve) => {
			this.ws.on("close", (code, reason) => {
				this.closeInfo = { code, reason: reason.toString("utf8") };
				this.#wake();
				resolve(this.closeInfo);
			});
		});
		this.opened = new Promise((resolve, reject) => {
			this.ws.once("open", () => resolve(this));
			this.closed.then((info) => {
				const why = this.errors.map((e) => e.message).join("; ");
				reject(new Error(`socket closed before open (code ${info.code}${why ? `: ${why}` : ""}) ${url}`));
			});
		});
		this.opened.catch(() => {}); // only awaited by callers that care
	}

	#waiter;

	#wake() {
		const w = this.#waiter;
		this.#waiter = null;
		w?.();
	}

	/** Open a socket and wait for the handshake. */
	static async open(url, protocols) {
		const peer = new WsPeer(url, protocols);
		try {
			await peer.opened;
		} catch (err) {
			peer.dispose();
			throw err;
		}
		return peer;
	}

	/** The subprotocol the server selected ("" if none). */
	get protocol() {
		return this.ws.protocol;
	}

	/** The next unread frame; fails after `timeoutMs` or if the socket closes first. */
	async next(timeoutMs = FRAME_TIMEOUT) {
		const deadline = Date.now() + timeoutMs;
		while (this.cursor >= this.frames.length) {
			if (this.closeInfo) {
				throw new Error(
					`socket closed (code ${this.closeInfo.code}, reason ${JSON.stringify(this.closeInfo.reason)}) while waiting for a frame; frames so far: ${this.describe()}`,
				);
			}
			const left = deadline - Date.now();
			if (left <= 0) {
				throw new Error(`no frame within ${timeoutMs} ms; frames so far: ${this.describe()}`);
			}
			await new Promise((resolve) => {
				const timer = setTimeout(resolve, left);
				this.#waiter = () => {
					clearTimeout(timer);
					resolve();
				};
			});
		}
		return this.frames[this.cursor++];
	}

	/** The next frame, which must be a text frame holding JSON; returns the parsed value. */
	async nextJson(timeoutMs) {
		const frame = await this.next(timeoutMs);
		assert.equal(frame.binary, false, `expected a text frame, got binary ${frame.data.toString("hex")}`);
		return JSON.parse(frame.data);
	}

	/** Frames not read yet (does not consume them). */
	unread() {
		return this.frames.slice(this.cursor);
	}

	describe() {
		return JSON.stringify(
			this.frames.map((f) => (f.binary ? `<binary ${f.data.toString("hex")}>` : f.data)),
		);
	}

	send(data) {
		this.ws.send(data);
	}

	/** Wait for the server to close the socket; fails after `timeoutMs`. */
	async waitClosed(timeoutMs = FRAME_TIMEOUT) {
		let timer;
		const timeout = new Promise((_, reject) => {
			timer = setTimeout(
				() => reject(new Error(`socket not closed within ${timeoutMs} ms; frames: ${this.describe()}`)),
				timeoutMs,
			);
		});
		try {
			return await Promise.race([this.closed, timeout]);
		} finally {
			clearTimeout(timer);
		}
	}

	/** Close with `code`/`reason` and wait for the close handshake; returns what the server sent. */
	async close(code = 1000, reason = "") {
		if (!this.closeInfo) this.ws.close(code, reason);
		const timer = setTimeout(() => this.ws.terminate(), FRAME_TIMEOUT);
		try {
			return await this.closed;
		} finally {
			clearTimeout(timer);
		}
	}

	/** Cleanup for `finally`: drop the socket if it is still open. */
	dispose() {
		if (this.ws.readyState !== WebSocket.CLOSED) this.ws.terminate();
	}
}

/**
 * Record the frames the official client's connection sockets receive. Installs a recording
 * subclass of `ws`'s WebSocket as `globalThis.WebSocket`, which the 2.0.33 client picks up the
 * first time it opens a socket (`importWebSocket()`), so call this at module level, before any
 * `connect()`. This makes "this connection received no such Event frame" observable: the client
 * itself silently drops events it has no listener for.
 */
export function tapClientFrames() {
	const sockets = [];
	class TapWebSocket extends WebSocket {
		constructor(...args) {
			super(...args);
			const rec = { url: String(args[0]), frames: [] };
			sockets.push(rec);
			this.on("message", (data, isBinary) => {
				if (!isBinary) rec.frames.push(JSON.parse(data.toString("utf8")));
			});
		}
	}
	globalThis.WebSocket = TapWebSocket;
	return {
		/** Parsed JSON frames received by the socket of this connection (found via its Init). */
		framesOf(conn) {
			const id = conn.connId;
			assert.ok(id, "connection has no connId yet (no Init received)");
			const rec = sockets.find((s) => s.frames[0]?.body?.val?.connectionId === id);
			assert.ok(rec, `no recorded socket for connection ${id}`);
			return rec.frames;
		},
		/** The `Event` frames (their `val`) received by this connection, optionally by name. */
		eventsOf(conn, name) {
			return this.framesOf(conn)
				.filter((f) => f.body?.tag === "Event" && (name === undefined || f.body.val.name === name))
				.map((f) => f.body.val);
		},
	};
}
