// Events over connections (spec §8.4): broadcast reaches only subscribed connections, whoever
// triggers it (own call, another connection, a stateless HTTP call); an event emitted by an action
// arrives before that action's result; once(); unsubscribing stops delivery.
//
// The client drops events it has no listener for, so "connection X received nothing" is checked on
// the wire: tapClientFrames() records the frames of every socket the client opens.
//
// "Give the server time" is done with barriers instead of sleeps: frames of one connection are
// ordered, so once a later action's response has arrived on a connection, any Event the server
// sent it before that point has arrived too.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { TIMEOUT, uniq, withClient } from "../lib/helpers.mjs";
import { tapClientFrames } from "../lib/ws.mjs";

const tap = tapClientFrames();
const opts = { timeout: TIMEOUT };

describe("broadcast", () => {
	test("reaches only subscribed connections; own, foreign and stateless triggers", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("bcast");
			const http = client.counter.getOrCreate([k]);
			const a = client.counter.getOrCreate([k]).connect();
			const b = client.counter.getOrCreate([k]).connect();
			const c = client.counter.getOrCreate([k]).connect(); // listens to another event only
			const d = client.counter.getOrCreate([k]).connect(); // no listener at all
			try {
				const got = { a: [], b: [], c: [] };
				a.on("count", (n) => got.a.push(n));
				b.on("count", (n, ...rest) => got.b.push(n, ...rest));
				c.on("message", (m) => got.c.push(m));
				// Subscriptions are sent on Init, before the queued actions: once these answer,
				// the server has processed them.
				await Promise.all([a.getCount(), b.getCount(), c.getCount(), d.getCount()]);

				assert.equal(await a.increment(1), 1); // a's own call
				assert.equal(await b.increment(2), 3); // foreign for a (another connection)
				assert.equal(await http.increment(3), 6); // stateless
				assert.equal(await c.increment(4), 10); // from a non-subscriber
				await Promise.all([a.getCount(), b.getCount(), c.getCount(), d.getCount()]); // barrier

				assert.deepEqual(got.a, [1, 3, 6, 10]);
				assert.deepEqual(got.b, [1, 3, 6, 10], "one argument per event");
				assert.deepEqual(got.c, []);
				// On the wire.
				const expected = [1, 3, 6, 10].map((n) => ({ name: "count", args: [n] }));
				assert.deepEqual(tap.eventsOf(a), expected);
				assert.deepEqual(tap.eventsOf(b), expected);
				assert.deepEqual(tap.eventsOf(c), [], "subscribed to 'message' only: no 'count' frames");
				assert.deepEqual(tap.eventsOf(d), [], "not subscribed: no Event frames");
			} finally {
				await Promise.all([a.dispose(), b.dispose(), c.dispose(), d.dispose()]);
			}
		});
	});

	test("connections to another actor receive nothing", opts, async () => {
		await withClient(async (client) => {
			const a = client.counter.getOrCreate([uniq("bcast-iso-a")]).connect();
			const b = client.counter.getOrCreate([uniq("bcast-iso-b")]).connect();
			try {
				const got = { a: [], b: [] };
				a.on("count", (n) => got.a.push(n));
				b.on("count", (n) => got.b.push(n));
				await Promise.all([a.getCount(), b.getCount()]);
				assert.equal(await a.increment(7), 7);
				await b.getCount();
				assert.deepEqual(got, { a: [7], b: [] });
				assert.deepEqual(tap.eventsOf(b), []);
			} finally {
				await Promise.all([a.dispose(), b.dispose()]);
			}
		});
	});

	test("chatRoom: send() broadcasts 'message' to all subscribers", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("bcast-chat");
			const alice = client.chatRoom.getOrCreate([k], { params: { userId: "alice", token: "ok" } }).connect();
			const bob = client.chatRoom.getOrCreate([k], { params: { userId: "bob" } }).connect();
			try {
				const got = { alice: [], bob: [] };
				alice.on("message", (m) => got.alice.push(m));
				bob.on("message", (m) => got.bob.push(m));
				await Promise.all([alice.history(), bob.history()]);
				assert.equal(await alice.send("hi"), "alice: hi");
				assert.equal(await bob.send("yo"), "bob: yo");
				await Promise.all([alice.history(), bob.history()]);
				assert.deepEqual(got.alice, ["alice: hi", "bob: yo"]);
				assert.deepEqual(got.bob, ["alice: hi", "bob: yo"]);
			} finally {
				await Promise.all([alice.dispose(), bob.dispose()]);
			}
		});
	});
});

describe("ordering", () => {
	test("an event emitted during an action arrives before the action's result", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("order");
			const conn = client.counter.getOrCreate([k]).connect();
			const chat = client.chatRoom.getOrCreate([k], { params: { userId: "alice" } }).connect();
			try {
				const log = [];
				conn.on("count", (n) => log.push(`event ${n}`));
				chat.on("message", (m) => log.push(`event ${m}`));
				for (let i = 1; i <= 5; i++) {
					await conn.increment(1).then((v) => log.push(`result ${v}`));
				}
				await chat.send("hi").then((v) => log.push(`result ${v}`));
				assert.deepEqual(log, [
					"event 1", "result 1",
					"event 2", "result 2",
					"event 3", "result 3",
					"event 4", "result 4",
					"event 5", "result 5",
					"event alice: hi", "result alice: hi",
				]);
				// Concurrent actions: each result still comes after its own event.
				const order = [];
				conn.on("count", (n) => order.push(["event", n]));
				const results = await Promise.all(
					Array.from({ length: 20 }, () => conn.increment(1).then((v) => (order.push(["result", v]), v))),
				);
				for (const v of results) {
					const ev = order.findIndex(([kind, n]) => kind === "event" && n === v);
					const res = order.findIndex(([kind, n]) => kind === "result" && n === v);
					assert.ok(ev !== -1 && ev < res, `event ${v} must precede result ${v}: ${JSON.stringify(order)}`);
				}
			} finally {
				await Promise.all([conn.dispose(), chat.dispose()]);
			}
		});
	});
});

describe("subscriptions", () => {
	test("once() fires exactly once", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("once");
			const a = client.counter.getOrCreate([k]).connect();
			const b = client.counter.getOrCreate([k]).connect();
			try {
				const onceA = [];
				const onceB = [];
				const onB = [];
				a.once("count", (n) => onceA.push(n));
				b.once("count", (n) => onceB.push(n));
				b.on("count", (n) => onB.push(n));
				await Promise.all([a.getCount(), b.getCount()]);
				assert.equal(await a.increment(), 1);
				assert.equal(await b.increment(), 2);
				assert.equal(await client.counter.getOrCreate([k]).increment(), 3);
				await Promise.all([a.getCount(), b.getCount()]);
				assert.deepEqual(onceA, [1]);
				assert.deepEqual(onceB, [1]);
				assert.deepEqual(onB, [1, 2, 3], "on() next to once() keeps receiving");
			} finally {
				await Promise.all([a.dispose(), b.dispose()]);
			}
		});
	});

	test("unsubscribing stops delivery; subscribing again resumes it", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("unsub");
			const http = client.counter.getOrCreate([k]);
			const a = client.counter.getOrCreate([k]).connect();
			const b = client.counter.getOrCreate([k]).connect();
			try {
				const gotA = [];
				const gotB = [];
				const unsub = a.on("count", (n) => gotA.push(n));
				b.on("count", (n) => gotB.push(n));
				await Promise.all([a.getCount(), b.getCount()]);
				assert.equal(await http.increment(), 1);
				await a.getCount();
				assert.deepEqual(gotA, [1]);

				unsub(); // last listener gone: the client sends SubscriptionRequest{subscribe:false}
				await a.getCount(); // sent after the unsubscription on the same socket
				const framesBefore = tap.eventsOf(a).length;
				assert.equal(await http.increment(), 2);
				assert.equal(await b.increment(), 3);
				assert.equal(await a.increment(), 4); // even a's own call
				await Promise.all([a.getCount(), b.getCount()]); // barrier
				assert.deepEqual(gotB, [1, 2, 3, 4], "the other subscriber still receives");
				assert.deepEqual(gotA, [1]);
				assert.deepEqual(tap.eventsOf(a).slice(framesBefore), [], "no Event frames after unsubscribing");

				const again = [];
				a.on("count", (n) => again.push(n)); // subscribes again
				await a.getCount();
				assert.equal(await http.increment(), 5);
				await a.getCount();
				assert.deepEqual(again, [5]);
				assert.deepEqual(gotA, [1]);
			} finally {
				await Promise.all([a.dispose(), b.dispose()]);
			}
		});
	});

	test("a subscription made before the connection is open takes effect", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("early-sub");
			const conn = client.counter.getOrCreate([k]).connect();
			try {
				const got = [];
				conn.on("count", (n) => got.push(n)); // not open yet: the client sends it right after Init
				assert.equal(await conn.getCount(), 0); // queued, flushed after the subscription
				assert.equal(await client.counter.getOrCreate([k]).increment(2), 2);
				await conn.getCount();
				assert.deepEqual(got, [2]);
			} finally {
				await conn.dispose();
			}
		});
	});
});
