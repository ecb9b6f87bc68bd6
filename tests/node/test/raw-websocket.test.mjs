// Raw WebSocket to an actor's onWebSocket (spec §10), the `echo` actor: through the official
// client's handle.websocket(path) and through a plain `ws` socket on the gateway URL.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { TIMEOUT, uniq, withClient } from "../lib/helpers.mjs";
import { FRAME_TIMEOUT, WsPeer, gatewayWsUrl } from "../lib/ws.mjs";

const opts = { timeout: TIMEOUT };

/** Queue the messages of a WebSocket returned by handle.websocket() (EventTarget API). */
function messageQueue(ws) {
	const queue = [];
	let wake = null;
	let closed = null;
	ws.addEventListener("message", (ev) => {
		queue.push(ev.data);
		wake?.();
	});
	ws.addEventListener("close", (ev) => {
		closed = { code: ev.code, reason: ev.reason };
		wake?.();
	});
	return {
		async next() {
			const deadline = Date.now() + FRAME_TIMEOUT;
			while (queue.length === 0) {
				if (closed) throw new Error(`socket closed (${JSON.stringify(closed)}) while waiting for a message`);
				const left = deadline - Date.now();
				if (left <= 0) throw new Error(`no message within ${FRAME_TIMEOUT} ms`);
				await new Promise((resolve) => {
					const timer = setTimeout(resolve, left);
					wake = () => {
						clearTimeout(timer);
						wake = null;
						resolve();
					};
				});
			}
			return queue.shift();
		},
	};
}

function waitOpen(ws) {
	if (ws.readyState === 1) return Promise.resolve();
	return new Promise((resolve, reject) => {
		ws.addEventListener("open", () => resolve(), { once: true });
		ws.addEventListener("close", (ev) => reject(new Error(`closed before open: ${ev.code} ${ev.reason}`)), { once: true });
	});
}

function waitClose(ws) {
	if (ws.readyState === 3) return Promise.resolve(null);
	return new Promise((resolve) => ws.addEventListener("close", (ev) => resolve({ code: ev.code, reason: ev.reason }), { once: true }));
}

const bytes = (data) => Array.from(new Uint8Array(data));

describe("handle.websocket() to onWebSocket", () => {
	test("text is echoed as text, binary as binary with identical bytes", opts, async () => {
		await withClient(async (client) => {
			const ws = await client.echo.getOrCreate([uniq("echo")]).websocket("chan?q=1");
			try {
				const q = messageQueue(ws);
				await waitOpen(ws);
				assert.equal(ws.protocol, "rivet", "the client offers rivet + rivet_encoding.bare; rivet is selected");

				ws.send("hello");
				assert.equal(await q.next(), "hello");
				ws.send("zoë 🎉 \u0000");
				assert.equal(await q.next(), "zoë 🎉 \u0000");
				ws.send("");
				assert.equal(await q.next(), "");
				ws.send(JSON.stringify({ body: { tag: "ActionRequest" } })); // no protocol parsing here
				assert.equal(await q.next(), '{"body":{"tag":"ActionRequest"}}');

				ws.send(new Uint8Array([0, 1, 2, 254, 255]));
				const b1 = await q.next();
				assert.ok(b1 instanceof ArrayBuffer, `binary comes back as binary (got ${typeof b1})`);
				assert.deepEqual(bytes(b1), [0, 1, 2, 254, 255]);

				ws.send(new Uint8Array([9, 8, 7]).buffer);
				const b2 = await q.next();
				assert.ok(b2 instanceof ArrayBuffer);
				assert.deepEqual(bytes(b2), [9, 8, 7]);

				// Bytes that are valid UTF-8 text stay binary.
				ws.send(new TextEncoder().encode("text-like"));
				const b3 = await q.next();
				assert.ok(b3 instanceof ArrayBuffer);
				assert.equal(new TextDecoder().decode(b3), "text-like");

				const big = new Uint8Array(40_000).map((_, i) => (i * 7) % 256);
				ws.send(big);
				const b4 = await q.next();
				assert.ok(b4 instanceof ArrayBuffer);
				assert.deepEqual(new Uint8Array(b4), big);

				// Order is kept across a burst of mixed frames.
				for (let i = 0; i < 50; i++) ws.send(i % 2 ? `m${i}` : new Uint8Array([i]));
				for (let i = 0; i < 50; i++) {
					const m = await q.next();
					if (i % 2) assert.equal(m, `m${i}`);
					else assert.deepEqual(bytes(m), [i]);
				}
			} finally {
				ws.close(1000, "done");
				await waitClose(ws);
			}
		});
	});

	test("without a path, and several sockets to one actor are independent", opts, async () => {
		await withClient(async (client) => {
			const handle = client.echo.getOrCreate([uniq("echo-multi")]);
			const a = await handle.websocket();
			const b = await handle.websocket("/other");
			try {
				const qa = messageQueue(a);
				const qb = messageQueue(b);
				await Promise.all([waitOpen(a), waitOpen(b)]);
				a.send("to-a");
				b.send("to-b");
				assert.equal(await qa.next(), "to-a");
				assert.equal(await qb.next(), "to-b");
			} finally {
				a.close(1000);
				b.close(1000);
				await Promise.all([waitClose(a), waitClose(b)]);
			}
		});
	});
});

describe("plain WebSocket on the gateway URL", () => {
	test("no subprotocol offered: echo works and the 101 carries no sec-websocket-protocol", opts, async () => {
		await withClient(async (client) => {
			const id = await client.echo.getOrCreate([uniq("echo-plain")]).resolve();
			const peer = await WsPeer.open(gatewayWsUrl(id, "/websocket/chan?q=1"));
			try {
				assert.ok(!("sec-websocket-protocol" in peer.upgradeHeaders), JSON.stringify(peer.upgradeHeaders));
				assert.equal(peer.protocol, "");
				peer.send("ping-text");
				assert.deepEqual(await peer.next(), { binary: false, data: "ping-text" });
				peer.send(Buffer.from([0, 128, 255]));
				assert.deepEqual(await peer.next(), { binary: true, data: Buffer.from([0, 128, 255]) });
				const closed = await peer.close(1000, "bye");
				assert.equal(closed.code, 1000);
			} finally {
				peer.dispose();
			}
		});
	});

	test("subprotocols rivet, rivet_encoding.bare offered: rivet is selected", opts, async () => {
		await withClient(async (client) => {
			const id = await client.echo.getOrCreate([uniq("echo-proto")]).resolve();
			const peer = await WsPeer.open(gatewayWsUrl(id, "/websocket/chan?q=1"), ["rivet", "rivet_encoding.bare"]);
			try {
				assert.equal(peer.upgradeHeaders["sec-websocket-protocol"], "rivet");
				assert.equal(peer.protocol, "rivet");
				peer.send("hi");
				assert.deepEqual(await peer.next(), { binary: false, data: "hi" });
				assert.equal((await peer.close(1000, "bye")).code, 1000);
			} finally {
				peer.dispose();
			}
		});
	});

	test("/websocket without a trailing path works too", opts, async () => {
		await withClient(async (client) => {
			const id = await client.echo.getOrCreate([uniq("echo-bare-path")]).resolve();
			const peer = await WsPeer.open(gatewayWsUrl(id, "/websocket"));
			try {
				peer.send("x");
				assert.deepEqual(await peer.next(), { binary: false, data: "x" });
			} finally {
				await peer.close(1000);
				peer.dispose();
			}
		});
	});
});
