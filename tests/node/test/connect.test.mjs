// Actions over a connection (`handle.connect()`, spec §8): results, concurrency, state shared with
// stateless calls, and errors on the connection (spec §8.5, §11).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ActorError, TIMEOUT, expectActorError, uniq, withClient } from "../lib/helpers.mjs";

const opts = { timeout: TIMEOUT };
const MASKED = "Internal error. Read the server logs for more details.";

describe("actions over connect()", () => {
	test("increment/getCount over the connection", opts, async () => {
		await withClient(async (client) => {
			const handle = client.counter.getOrCreate([uniq("conn-inc")]);
			const conn = handle.connect();
			try {
				assert.equal(await conn.getCount(), 0);
				assert.equal(conn.connStatus, "connected");
				assert.equal(await conn.increment(), 1);
				assert.equal(await conn.increment(5), 6);
				assert.equal(await conn.getCount(), 6);
				assert.equal(await conn.action({ name: "increment", args: [4] }), 10);
				// Init carried the actor id and a connection id.
				assert.equal(conn.actorId, await handle.resolve());
				assert.equal(typeof conn.connId, "string");
				assert.ok(conn.connId.length > 0);
				// The same actor state as stateless calls.
				assert.equal(await handle.getCount(), 10);
				assert.equal(await handle.increment(), 11);
				assert.equal(await conn.getCount(), 11);
			} finally {
				await conn.dispose();
			}
			assert.equal(conn.connStatus, "idle");
		});
	});

	test("values round-trip over the connection (tagged JSON, spec §3.1)", opts, async () => {
		await withClient(async (client) => {
			const conn = client.counter.getOrCreate([uniq("conn-echo")]).connect();
			try {
				const args = [
					"zoë 🎉 \u0000\n",
					["$x", 2],
					{ nested: [null, true, 1.5, { k: "v" }] },
					new Uint8Array([0, 1, 255]),
					12345678901234567890n,
				];
				const out = await conn.echo(...args);
				assert.deepEqual(out.slice(0, 3), args.slice(0, 3));
				assert.deepEqual(new Uint8Array(out[3]), args[3]);
				assert.equal(out[4], args[4]);
				assert.deepEqual(await conn.echo(), []);
			} finally {
				await conn.dispose();
			}
		});
	});

	test("two connections to one actor get distinct connection ids and share state", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("conn-two");
			const a = client.counter.getOrCreate([k]).connect();
			const b = client.counter.getOrCreate([k]).connect();
			try {
				assert.equal(await a.increment(2), 2);
				assert.equal(await b.increment(3), 5);
				assert.equal(await a.getCount(), 5);
				assert.equal(a.actorId, b.actorId);
				assert.notEqual(a.connId, b.connId);
			} finally {
				await a.dispose();
				await b.dispose();
			}
		});
	});

	test("100 concurrent increments on one connection -> 1..100 exactly once", { timeout: 60_000 }, async () => {
		await withClient(async (client) => {
			const handle = client.counter.getOrCreate([uniq("conn-concurrent")]);
			const conn = handle.connect();
			try {
				// Fired before the connection is even open: queued by the client and flushed on Init.
				const results = await Promise.all(Array.from({ length: 100 }, () => conn.increment(1)));
				assert.deepEqual(
					[...results].sort((x, y) => x - y),
					Array.from({ length: 100 }, (_, i) => i + 1),
				);
				// And 100 more once connected, mixed with reads.
				const more = await Promise.all(
					Array.from({ length: 100 }, (_, i) => (i % 2 ? conn.getCount() : conn.increment(1))),
				);
				const incs = more.filter((_, i) => i % 2 === 0).sort((x, y) => x - y);
				assert.deepEqual(incs, Array.from({ length: 50 }, (_, i) => 101 + i));
				for (const [i, v] of more.entries()) {
					if (i % 2) assert.ok(v >= 100 && v <= 150, `getCount result ${v} out of range`);
				}
				assert.equal(await conn.getCount(), 150);
				assert.equal(await handle.getCount(), 150);
			} finally {
				await conn.dispose();
			}
		});
	});
});

describe("errors over connect()", () => {
	test("UserError on the second action: rejects that action only, onError not called", opts, async () => {
		await withClient(async (client) => {
			const conn = client.profile.getOrCreate([uniq("ws-user-err")]).connect();
			const connErrors = [];
			conn.onError((e) => connErrors.push(e));
			try {
				assert.equal(await conn.getName(), "unnamed"); // action id 0
				await expectActorError(conn.setName("x"), {
					group: "user",
					code: "name_too_short",
					message: "Name too short",
					metadata: { minLength: 3, actual: 1 },
				});
				await expectActorError(conn.setName("ab"), {
					group: "user",
					code: "name_too_short",
					metadata: { minLength: 3, actual: 2 },
				});
				// A non-zero actionId in the Error frame makes the client reject only that action;
				// a missing/null/0 id would reach onError (spec §8.5).
				assert.deepEqual(connErrors, []);
				assert.equal(conn.connStatus, "connected");
				assert.equal(await conn.setName("Carol"), "Carol");
				assert.equal(await conn.getName(), "Carol");
			} finally {
				await conn.dispose();
			}
		});
	});

	test("UserError on the first action (id 0): rejects it and also reaches onError (client quirk, spec §8.5)", opts, async () => {
		await withClient(async (client) => {
			const conn = client.profile.getOrCreate([uniq("ws-user-err0")]).connect();
			const connErrors = [];
			conn.onError((e) => connErrors.push(e));
			try {
				await expectActorError(conn.setName("x"), {
					group: "user",
					code: "name_too_short",
					message: "Name too short",
					metadata: { minLength: 3, actual: 1 },
				});
				assert.equal(connErrors.length, 1, "the client treats an Error with actionId 0 as connection-level");
				assert.ok(connErrors[0] instanceof ActorError);
				assert.equal(connErrors[0].group, "user");
				assert.equal(connErrors[0].code, "name_too_short");
				assert.deepEqual(connErrors[0].metadata, { minLength: 3, actual: 1 });
				// The connection itself is fine: the server did not close it.
				assert.equal(conn.connStatus, "connected");
				assert.equal(await conn.getName(), "unnamed");
				assert.equal(await conn.setName("Dora"), "Dora");
				assert.equal(connErrors.length, 1);
			} finally {
				await conn.dispose();
			}
		});
	});

	test("internal errors are masked over the connection and it keeps working", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("ws-boom");
			const conn = client.profile.getOrCreate([k], { createWithInput: { name: "Eve" } }).connect();
			const connErrors = [];
			conn.onError((e) => connErrors.push(e));
			try {
				assert.equal(await conn.getName(), "Eve"); // id 0
				const err = await expectActorError(conn.boom(), {
					group: "internal",
					code: "internal_error",
					message: MASKED,
					metadata: {},
				});
				assert.ok(!/secret/i.test(err.message));
				assert.ok(!/secret/i.test(JSON.stringify(err.metadata ?? null)));
				assert.deepEqual(connErrors, []);
				// Still connected, same socket, state intact; concurrent boom + normal actions settle.
				const connId = conn.connId;
				const [r1, r2, r3] = await Promise.allSettled([conn.boom(), conn.getName(), conn.setName("Evelyn")]);
				assert.equal(r1.status, "rejected");
				assert.equal(r1.reason.code, "internal_error");
				assert.deepEqual([r2.value, r3.value], ["Eve", "Evelyn"]);
				assert.equal(await conn.getName(), "Evelyn");
				assert.equal(conn.connStatus, "connected");
				assert.equal(conn.connId, connId, "the server must not close the socket on an action error");
				assert.equal(await client.profile.get([k]).getName(), "Evelyn");
			} finally {
				await conn.dispose();
			}
		});
	});

	test("unknown action over the connection -> action/not_found", opts, async () => {
		await withClient(async (client) => {
			const conn = client.counter.getOrCreate([uniq("ws-no-action")]).connect();
			try {
				assert.equal(await conn.increment(), 1);
				await expectActorError(conn.action({ name: "doesNotExist", args: [] }), {
					group: "action",
					code: "not_found",
					message: "Action 'doesNotExist' not found. Validate the action exists on your actor.",
					metadata: undefined,
				});
				await expectActorError(conn.nope(1, 2), { group: "action", code: "not_found" });
				assert.equal(await conn.increment(), 2);
			} finally {
				await conn.dispose();
			}
		});
	});
});
