// Lifecycle hooks seen through the `lifecycle` actor (spec §7, §12): onCreate (first start),
// onWake (every start), onConnect / onDisconnect per connection, including the ephemeral
// connection of every stateless call. `events()` returns a snapshot taken inside the action, so
// the stateless call's own onDisconnect (run after the action) is not in its result.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { TIMEOUT, uniq, withClient } from "../lib/helpers.mjs";
import { WsPeer, actionRequest, gatewayWsUrl } from "../lib/ws.mjs";

const opts = { timeout: TIMEOUT };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll `events()` over an open connection (adds no events) until `pred` holds. */
async function pollEvents(conn, pred, what) {
	const deadline = Date.now() + 5_000;
	let ev;
	for (;;) {
		ev = await conn.events();
		if (pred(ev)) return ev;
		if (Date.now() > deadline) assert.fail(`${what}: still ${JSON.stringify(ev)}`);
		await sleep(50);
	}
}

describe("lifecycle hooks", () => {
	test("connect() + dispose, then stateless calls: exact sequence", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("lc");
			const conn = client.lifecycle.getOrCreate([k]).connect();
			try {
				assert.deepEqual(await conn.events(), ["onCreate", "onWake", "onConnect"]);
			} finally {
				await conn.dispose();
			}
			// The server learns of the close asynchronously; on the reference onDisconnect has
			// already run when dispose() resolves, but that is not a protocol guarantee.
			await sleep(200);
			const http = client.lifecycle.getOrCreate([k]);
			// Reference: the WebSocket conn's onDisconnect, then the stateless call's onConnect.
			assert.deepEqual(await http.events(), ["onCreate", "onWake", "onConnect", "onDisconnect", "onConnect"]);
			// The first stateless call's onDisconnect ran after its response.
			assert.deepEqual(await http.events(), [
				"onCreate", "onWake", "onConnect", "onDisconnect",
				"onConnect", "onDisconnect",
				"onConnect",
			]);
		});
	});

	test("first contact by a stateless call; later calls add onDisconnect + onConnect each", opts, async () => {
		await withClient(async (client) => {
			const http = client.lifecycle.getOrCreate([uniq("lc-http")]);
			assert.deepEqual(await http.events(), ["onCreate", "onWake", "onConnect"]);
			assert.deepEqual(await http.events(), ["onCreate", "onWake", "onConnect", "onDisconnect", "onConnect"]);
			// Same over a connection: its onConnect follows the last stateless onDisconnect.
			const conn = http.connect();
			try {
				assert.deepEqual(await conn.events(), [
					"onCreate", "onWake", "onConnect", "onDisconnect",
					"onConnect", "onDisconnect",
					"onConnect",
				]);
				// Actions over the connection run no connect hooks.
				assert.deepEqual((await conn.events()).length, 7);
			} finally {
				await conn.dispose();
			}
		});
	});

	test("two connections: one onConnect each, onDisconnect when one goes away", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("lc-two");
			const a = client.lifecycle.getOrCreate([k]).connect();
			const b = client.lifecycle.getOrCreate([k]).connect();
			try {
				await a.events();
				assert.deepEqual(await b.events(), ["onCreate", "onWake", "onConnect", "onConnect"]);
				await a.dispose();
				assert.deepEqual(
					await pollEvents(b, (ev) => ev.length > 4, "no onDisconnect after dispose()"),
					["onCreate", "onWake", "onConnect", "onConnect", "onDisconnect"],
				);
			} finally {
				await Promise.all([a.dispose(), b.dispose()]);
			}
		});
	});

	test("a socket dropped without a close frame still gets onDisconnect", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("lc-drop");
			const observer = client.lifecycle.getOrCreate([k]).connect();
			let peer;
			try {
				assert.deepEqual(await observer.events(), ["onCreate", "onWake", "onConnect"]);
				const id = await client.lifecycle.getOrCreate([k]).resolve();
				peer = await WsPeer.open(gatewayWsUrl(id, "/connect"), ["rivet", "rivet_encoding.json"]);
				await peer.nextJson(); // Init
				peer.send(actionRequest(0, "events"));
				const res = await peer.nextJson();
				assert.deepEqual(res.body.val.output, ["onCreate", "onWake", "onConnect", "onConnect"]);
				peer.ws.terminate(); // TCP gone, no close handshake
				assert.deepEqual(
					await pollEvents(observer, (ev) => ev.length > 4, "no onDisconnect after the socket dropped"),
					["onCreate", "onWake", "onConnect", "onConnect", "onDisconnect"],
				);
			} finally {
				peer?.dispose();
				await observer.dispose();
			}
		});
	});
});
