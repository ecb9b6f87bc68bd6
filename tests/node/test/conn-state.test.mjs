// Connection params and connection state (chatRoom): createConnState over WebSocket and stateless
// HTTP (ephemeral conn, spec §7), conn.send to other connections (spec §8.4), rejection by
// onBeforeConnect (spec §7, §8.6).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ActorError, TIMEOUT, expectActorError, uniq, withClient } from "../lib/helpers.mjs";
import { tapClientFrames } from "../lib/ws.mjs";

const tap = tapClientFrames();
const opts = { timeout: TIMEOUT };

describe("connection state from params", () => {
	test("whoAmI over connect(): params.userId, or 'anonymous' without params", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("who-ws");
			const alice = client.chatRoom.getOrCreate([k], { params: { userId: "alice", token: "ok" } }).connect();
			const anon = client.chatRoom.getOrCreate([k]).connect();
			const num = client.chatRoom.getOrCreate([k], { params: { userId: 42 } }).connect();
			const unicode = client.chatRoom.getOrCreate([k], { params: { userId: "zoë/🎉 %20&x=1", token: "ok" } }).connect();
			try {
				assert.equal(await alice.whoAmI(), "alice");
				assert.equal(await anon.whoAmI(), "anonymous");
				assert.equal(await num.whoAmI(), "42");
				assert.equal(await unicode.whoAmI(), "zoë/🎉 %20&x=1");
				// State is per connection and stable.
				assert.equal(await alice.whoAmI(), "alice");
			} finally {
				await Promise.all([alice.dispose(), anon.dispose(), num.dispose(), unicode.dispose()]);
			}
		});
	});

	test("whoAmI over stateless HTTP: params via x-rivet-conn-params, else 'anonymous'", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("who-http");
			assert.equal(await client.chatRoom.getOrCreate([k], { params: { userId: "bob", token: "ok" } }).whoAmI(), "bob");
			assert.equal(await client.chatRoom.getOrCreate([k]).whoAmI(), "anonymous");
			assert.equal(await client.chatRoom.get([k], { params: { userId: "carol" } }).whoAmI(), "carol");
			const id = await client.chatRoom.getOrCreate([k]).resolve();
			assert.equal(await client.chatRoom.getForId(id, { params: { userId: "dan" } }).whoAmI(), "dan");
			// JSON in a header: the client sends it unencoded, so only ASCII works (fetch rejects
			// anything beyond Latin-1 itself).
			const odd = `d'an "q" {x}: %41 \\ /`;
			assert.equal(await client.chatRoom.getOrCreate([k], { params: { userId: odd } }).whoAmI(), odd);
		});
	});

	test("send(text) returns and broadcasts '<userId>: <text>'", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("chat-send");
			const alice = client.chatRoom.getOrCreate([k], { params: { userId: "alice", token: "ok" } }).connect();
			const listener = client.chatRoom.getOrCreate([k]).connect();
			try {
				const got = [];
				listener.on("message", (m) => got.push(m));
				await listener.history();
				assert.equal(await alice.send("hello"), "alice: hello");
				assert.equal(await client.chatRoom.getOrCreate([k], { params: { userId: "bob" } }).send("hey"), "bob: hey");
				assert.equal(await client.chatRoom.getOrCreate([k]).send("?"), "anonymous: ?");
				await listener.history();
				assert.deepEqual(got, ["alice: hello", "bob: hey", "anonymous: ?"]);
				assert.deepEqual(await alice.history(), ["alice: hello", "bob: hey", "anonymous: ?"]);
			} finally {
				await Promise.all([alice.dispose(), listener.dispose()]);
			}
		});
	});
});

describe("conn.send to other connections", () => {
	test("notifyOthers reaches every other connection, not the caller; returns their number", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("notify");
			const a = client.chatRoom.getOrCreate([k], { params: { userId: "alice", token: "ok" } }).connect();
			const b = client.chatRoom.getOrCreate([k], { params: { userId: "bob" } }).connect();
			const c = client.chatRoom.getOrCreate([k]).connect();
			try {
				const got = { a: [], b: [], c: [] };
				a.on("notification", (n) => got.a.push(n));
				b.on("notification", (n) => got.b.push(n));
				c.on("notification", (n) => got.c.push(n));
				await Promise.all([a.whoAmI(), b.whoAmI(), c.whoAmI()]);
				// No stateless call runs meanwhile: its ephemeral conn would be counted (see below).
				assert.equal(await a.notifyOthers("hi"), 2);
				await Promise.all([a.history(), b.history(), c.history()]); // barrier
				assert.deepEqual(got.a, []);
				assert.deepEqual(got.b, [{ from: "alice", text: "hi" }]);
				assert.deepEqual(got.c, [{ from: "alice", text: "hi" }]);
				assert.deepEqual(tap.eventsOf(a), [], "the caller gets no Event frame");
				assert.deepEqual(tap.eventsOf(b), [{ name: "notification", args: [{ from: "alice", text: "hi" }] }]);

				// From a stateless call: its ephemeral conn is in c.conns but is the caller itself,
				// so all three WebSocket connections are "others" (observed on the reference).
				const dan = client.chatRoom.getOrCreate([k], { params: { userId: "dan" } });
				assert.equal(await dan.notifyOthers("yo"), 3);
				await Promise.all([a.history(), b.history(), c.history()]);
				const yo = { from: "dan", text: "yo" };
				assert.deepEqual(got.a, [yo]);
				assert.deepEqual(got.b, [{ from: "alice", text: "hi" }, yo]);
				assert.deepEqual(got.c, [{ from: "alice", text: "hi" }, yo]);
			} finally {
				await Promise.all([a.dispose(), b.dispose(), c.dispose()]);
			}
		});
	});

	test("a disposed connection is no longer counted", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("notify-gone");
			const a = client.chatRoom.getOrCreate([k], { params: { userId: "alice" } }).connect();
			const b = client.chatRoom.getOrCreate([k], { params: { userId: "bob" } }).connect();
			try {
				await Promise.all([a.whoAmI(), b.whoAmI()]);
				assert.equal(await a.notifyOthers("1"), 1);
				await b.dispose();
				// The server learns of the close asynchronously: poll briefly.
				let n;
				for (let i = 0; i < 50; i++) {
					n = await a.notifyOthers("2");
					if (n === 0) break;
					await new Promise((r) => setTimeout(r, 100));
				}
				assert.equal(n, 0);
				assert.equal(await client.chatRoom.getOrCreate([k]).notifyOthers("3"), 1, "stateless: only a is other");
			} finally {
				await Promise.all([a.dispose(), b.dispose()]);
			}
		});
	});
});

describe("onBeforeConnect rejection (token 'bad')", () => {
	test("stateless call -> ActorError user/forbidden", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("forbidden-http");
			const bad = client.chatRoom.getOrCreate([k], { params: { userId: "eve", token: "bad" } });
			await expectActorError(bad.whoAmI(), {
				group: "user",
				code: "forbidden",
				message: "Forbidden: bad token",
				metadata: undefined,
			});
			await expectActorError(bad.send("nope"), { group: "user", code: "forbidden" });
			// Nothing ran: the message was not stored. A good caller still works.
			const good = client.chatRoom.getOrCreate([k], { params: { userId: "eve", token: "ok" } });
			assert.deepEqual(await good.history(), []);
			assert.equal(await good.whoAmI(), "eve");
		});
	});

	test("connect() -> actions reject with 'forbidden'; the connection never opens", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("forbidden-ws");
			const good = client.chatRoom.getOrCreate([k], { params: { userId: "alice", token: "ok" } }).connect();
			const bad = client.chatRoom.getOrCreate([k], { params: { userId: "eve", token: "bad" } }).connect();
			const opened = [];
			bad.onOpen(() => opened.push("open"));
			try {
				assert.equal(await good.whoAmI(), "alice");
				// Reference: 101, then close 1011 "forbidden" (no Error frame), so the client rejects
				// with Error("Connection closed (code: 1011, reason: forbidden)"). An Error frame with
				// actionId null before the close would give an ActorError user/forbidden instead;
				// either way "forbidden" must be visible.
				const settled = await Promise.allSettled([bad.whoAmI(), bad.send("x")]);
				for (const r of settled) {
					assert.equal(r.status, "rejected", `resolved with ${JSON.stringify(r.value)}`);
					const err = r.reason;
					assert.ok(err instanceof Error);
					assert.match(err.message, /forbidden/);
					if (err instanceof ActorError) {
						assert.equal(err.group, "user");
						assert.equal(err.code, "forbidden");
					}
				}
				assert.deepEqual(opened, []);
				assert.notEqual(bad.connStatus, "connected");
				// The rejected connection was never added: good is alone, nothing was sent.
				assert.equal(await good.notifyOthers("anyone?"), 0);
				assert.deepEqual(await good.history(), []);
			} finally {
				// Stops the client's reconnect loop.
				await Promise.all([bad.dispose(), good.dispose()]);
			}
		});
	});
});
