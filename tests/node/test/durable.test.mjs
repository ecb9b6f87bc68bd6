// Schedules, sleep and destroy (spec §12) through the official client, plus Pinion's durable
// extras (skipped on servers without them).
//
// * `reminder`: `setReminder(message, delayMs)` → `c.schedule.after(delayMs, "sendReminder",
//   message)`; `sendReminder` records the message and broadcasts "reminder" {message}.
// * `sleeper`: `bump()` increments durable `state.count` and ephemeral `vars.count`; `onWake`
//   counts wakes in the state; `sleepNow()` → `c.sleep()`.
// * `lifecycle.destroyMe()` → `c.destroy()`.
//
// The reference's sleep and destroy are asynchronous: for a short time afterwards it may still
// answer from the old instance, or answer transient errors (`internal_error` "Actor is
// stopping", `actor/stopping`). The tests therefore poll, bounded, with `eventually()` (retrying
// only those transient errors) instead of sleeping a fixed time. Schedules are waited for the
// same way; a reminder's delay is also checked from below (not delivered early).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
	IS_REFERENCE,
	TIMEOUT,
	eventually,
	expectActorError,
	serverHasAction,
	serverHasActor,
	uniq,
	withClient,
} from "../lib/helpers.mjs";
import { WsPeer, actionRequest, gatewayWsUrl } from "../lib/ws.mjs";

const opts = { timeout: TIMEOUT };
const JSON_PROTOCOLS = ["rivet", "rivet_encoding.json"];
const FRESH = ["onCreate", "onWake", "onConnect"]; // a new lifecycle actor's first stateless events()

// Pinion-only extras (not in the reference actor set).
const HAS_DURABLE_COUNTER = await serverHasActor("durableCounter");
const HAS_PENDING = await serverHasAction("reminder", "pending");
const HAS_INCREMENT_SAVED = await serverHasAction("counter", "incrementSaved");
const pinionOnly = (has, what) => !has && `the server has no ${what} (a Pinion extra)`;
const NO_DC = pinionOnly(HAS_DURABLE_COUNTER, "`durableCounter` actor");
// `pending` stands for the schedule extras (pending/cancel/remindAt).
const NO_SCHED = pinionOnly(HAS_PENDING, "`reminder.pending`/`cancel`/`remindAt` actions");

/**
 * On a raw `/connect` socket to a fresh `actor`, calls `action` (which stops the actor: sleep or
 * destroy): its `ActionResponse` (`true`) must arrive, then the server closes with 1000. The
 * reason is not asserted (the reference sends "", as Pinion does).
 */
async function actionThenClose(actor, action, key) {
	await withClient(async (client) => {
		const id = await client[actor].getOrCreate([uniq(key)]).resolve();
		const peer = await WsPeer.open(gatewayWsUrl(id, "/connect"), JSON_PROTOCOLS);
		try {
			assert.equal((await peer.nextJson()).body.tag, "Init");
			peer.send(actionRequest(0, action));
			assert.deepEqual(await peer.nextJson(), {
				body: { tag: "ActionResponse", val: { id: ["$BigInt", "0"], output: true } },
			});
			const { code } = await peer.waitClosed(10_000);
			assert.equal(code, 1000);
		} finally {
			peer.dispose();
		}
	});
}

/** Subscribe `conn` to `name`; returns the array that collects each event's argument list. */
function collect(conn, name) {
	const got = [];
	conn.on(name, (...args) => got.push(args));
	return got;
}

/** Wait (bounded) until `got` holds at least `n` events. */
function waitEvents(got, n, what) {
	return eventually(() => got.length, { until: (len) => len >= n, what: `${what} (events: ${JSON.stringify(got)})` });
}

/**
 * Poll `fn()` until it rejects with `group/code` (the reference may still answer, or answer
 * transient errors, right after a destroy); returns the error.
 */
async function eventuallyRejects(fn, { group, code }, what) {
	let caught;
	await eventually(
		async () => {
			try {
				return { ok: await fn() };
			} catch (err) {
				caught = err;
				return { group: err?.group, code: err?.code, message: err?.message };
			}
		},
		{ until: (r) => r.group === group && r.code === code, what },
	);
	return caught;
}

describe("reminder: c.schedule.after", () => {
	test("over connect(): 'reminder' {message} arrives after the delay, then sent() has it", opts, async () => {
		await withClient(async (client) => {
			const conn = client.reminder.getOrCreate([uniq("rem-conn")]).connect();
			try {
				const got = collect(conn, "reminder");
				// The subscription is sent with Init, before this queued action.
				assert.deepEqual(await conn.sent(), []);
				const t0 = Date.now();
				assert.equal(await conn.setReminder("hi", 200), true);
				await waitEvents(got, 1, "no 'reminder' event");
				const elapsed = Date.now() - t0;
				assert.ok(elapsed >= 180, `delivered after ${elapsed} ms, before the 200 ms delay`);
				assert.deepEqual(got, [[{ message: "hi" }]], "one event, one argument {message}");
				assert.deepEqual(await conn.sent(), ["hi"]);
				assert.deepEqual(got.length, 1, "fired once");
			} finally {
				await conn.dispose();
			}
		});
	});

	test("stateless: setReminder, then sent() gets the message after the delay", opts, async () => {
		await withClient(async (client) => {
			const h = client.reminder.getOrCreate([uniq("rem-http")]);
			assert.equal(await h.setReminder("later", 300), true);
			assert.deepEqual(await h.sent(), [], "not before its delay");
			await eventually(() => h.sent(), { until: (s) => s.length > 0, what: "sent() never got the message" });
			assert.deepEqual(await h.sent(), ["later"]);
		});
	});

	test("delay 0 fires (after the scheduling action returned)", opts, async () => {
		await withClient(async (client) => {
			const conn = client.reminder.getOrCreate([uniq("rem-zero")]).connect();
			try {
				const got = collect(conn, "reminder");
				await conn.sent(); // subscribed
				assert.equal(await conn.setReminder("now", 0), true);
				await waitEvents(got, 1, "no 'reminder' event for delay 0");
				assert.deepEqual(got, [[{ message: "now" }]]);
				assert.deepEqual(await conn.sent(), ["now"]);
			} finally {
				await conn.dispose();
			}
		});
	});

	test("reminders fire in due order, not in the order they were set", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("rem-order");
			const conn = client.reminder.getOrCreate([k]).connect();
			try {
				const got = collect(conn, "reminder");
				await conn.sent();
				assert.equal(await conn.setReminder("late", 700), true);
				assert.equal(await conn.setReminder("early", 250), true);
				assert.equal(await conn.setReminder("first", 0), true);
				await waitEvents(got, 3, "not all reminders fired");
				assert.deepEqual(got.map(([e]) => e.message), ["first", "early", "late"]);
				assert.deepEqual(await client.reminder.getOrCreate([k]).sent(), ["first", "early", "late"]);
			} finally {
				await conn.dispose();
			}
		});
	});
});

describe("sleeper: c.sleep()", () => {
	test("stateless: state survives the sleep, vars are reset, onWake runs again", opts, async () => {
		await withClient(async (client) => {
			const h = client.sleeper.getOrCreate([uniq("sleep")]);
			assert.deepEqual(await h.bump(), { state: 1, vars: 1 });
			assert.deepEqual(await h.bump(), { state: 2, vars: 2 });
			assert.deepEqual(await h.read(), { state: 2, vars: 2, wakes: 1 });
			assert.equal(await h.sleepNow(), true);
			// The reference sleeps asynchronously: until it has, reads may still see the old
			// instance (vars 2) or fail transiently.
			const woken = await eventually(() => h.read(), {
				until: (r) => r.wakes !== 1,
				what: "the actor did not sleep and wake again",
			});
			assert.deepEqual(woken, { state: 2, vars: 0, wakes: 2 });
			assert.deepEqual(await h.bump(), { state: 3, vars: 1 });
			assert.deepEqual(await h.read(), { state: 3, vars: 1, wakes: 2 });
		});
	});

	test("sleep twice: wakes counts every start", opts, async () => {
		await withClient(async (client) => {
			const h = client.sleeper.getOrCreate([uniq("sleep-2")]);
			await h.bump();
			for (const wakes of [2, 3]) {
				assert.equal(await h.sleepNow(), true);
				const r = await eventually(() => h.read(), {
					until: (r) => r.wakes === wakes,
					what: `wake ${wakes} not seen`,
				});
				assert.deepEqual(r, { state: 1, vars: 0, wakes });
			}
		});
	});

	test("an open connection outlives the sleep: the client reconnects to the woken actor", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("sleep-conn");
			const conn = client.sleeper.getOrCreate([k]).connect();
			try {
				assert.deepEqual(await conn.bump(), { state: 1, vars: 1 });
				// Sleep triggered by a stateless call (not over this connection).
				assert.equal(await client.sleeper.getOrCreate([k]).sleepNow(), true);
				const r = await eventually(() => conn.read(), {
					until: (r) => r.wakes === 2,
					what: "the connection never saw the woken actor",
				});
				assert.deepEqual(r, { state: 1, vars: 0, wakes: 2 });
				assert.deepEqual(await conn.bump(), { state: 2, vars: 1 });
			} finally {
				await conn.dispose();
			}
		});
	});

	test("sleepNow() over a connection returns true; the connection then sees the woken actor", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("sleep-via-conn");
			const conn = client.sleeper.getOrCreate([k]).connect();
			try {
				assert.deepEqual(await conn.bump(), { state: 1, vars: 1 });
				assert.deepEqual(await conn.bump(), { state: 2, vars: 2 });
				assert.equal(await conn.sleepNow(), true);
				const r = await eventually(() => conn.read(), {
					until: (r) => r.wakes !== 1,
					what: "the connection never saw the woken actor",
				});
				assert.deepEqual(r, { state: 2, vars: 0, wakes: 2 });
			} finally {
				await conn.dispose();
			}
		});
	});

	test("state changed over a connection survives a sleep requested over that connection", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("sleep-conn-state");
			const conn = client.sleeper.getOrCreate([k]).connect();
			try {
				assert.deepEqual(await conn.bump(), { state: 1, vars: 1 });
				assert.deepEqual(await conn.bump(), { state: 2, vars: 2 });
				// Its result is checked by the test above; here only the state matters.
				await conn.sleepNow().catch(() => {});
			} finally {
				await conn.dispose();
			}
			const h = client.sleeper.getOrCreate([k]);
			const r = await eventually(() => h.read(), {
				until: (r) => r.wakes !== 1,
				what: "the actor did not sleep and wake again",
			});
			assert.deepEqual(r, { state: 2, vars: 0, wakes: 2 });
		});
	});

	test("wire: sleepNow over /connect → ActionResponse true, then the server closes 1000", opts, () =>
		actionThenClose("sleeper", "sleepNow", "sleep-wire"));
});

describe("lifecycle.destroyMe: c.destroy()", () => {
	test("stateless: destroyed → get() not_found; the key is free; getOrCreate() makes a fresh actor", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("destroy");
			const h = client.lifecycle.getOrCreate([k]);
			assert.deepEqual(await h.events(), FRESH);
			assert.deepEqual(await h.events(), [...FRESH, "onDisconnect", "onConnect"]);
			assert.equal(await h.destroyMe(), true);

			// Destruction is asynchronous in the reference: poll until get() reports not_found.
			await eventuallyRejects(
				() => client.lifecycle.get([k]).resolve(),
				{ group: "actor", code: "not_found" },
				"get([key]).resolve() still finds the destroyed actor",
			);
			await expectActorError(client.lifecycle.get([k]).events(), { group: "actor", code: "not_found" });

			// getOrCreate: a new actor, hooks from the start, empty state.
			const fresh = client.lifecycle.getOrCreate([k]);
			assert.deepEqual(await fresh.events(), FRESH);
			assert.deepEqual(await client.lifecycle.get([k]).events(), [...FRESH, "onDisconnect", "onConnect"]);
		});
	});

	test("after destroy, create() with the same key succeeds (no duplicate_key)", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("destroy-create");
			const first = await client.lifecycle.create([k]);
			await first.events();
			assert.equal(await first.destroyMe(), true);
			await eventuallyRejects(
				() => client.lifecycle.get([k]).resolve(),
				{ group: "actor", code: "not_found" },
				"get([key]).resolve() still finds the destroyed actor",
			);
			const second = await client.lifecycle.create([k]);
			assert.deepEqual(await second.events(), FRESH);
		});
	});

	test("over a connection: destroyMe() returns true; a getOrCreate connection reconnects to a fresh actor", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("destroy-conn");
			// One stateless call first, so that the old actor's list differs from a fresh one.
			assert.deepEqual(await client.lifecycle.getOrCreate([k]).events(), FRESH);
			const conn = client.lifecycle.getOrCreate([k]).connect();
			try {
				const old = [...FRESH, "onDisconnect", "onConnect"];
				assert.deepEqual(await conn.events(), old);
				assert.equal(await conn.destroyMe(), true);
				// Until the old socket closes, the old actor may still answer (the reference does).
				// The client may log "action not found in in-flight map": a call it rejected when
				// the old socket closed had also been queued, and is sent again after the
				// reconnect (client behaviour; harmless for this read-only action).
				const ev = await eventually(() => conn.events(), {
					until: (ev) => ev.length !== old.length,
					what: "the connection never reached a fresh actor",
				});
				assert.deepEqual(ev, ["onCreate", "onWake", "onConnect"]);
			} finally {
				await conn.dispose();
			}
		});
	});

	test("wire: destroyMe over /connect → ActionResponse true, then the server closes 1000", opts, () =>
		actionThenClose("lifecycle", "destroyMe", "destroy-wire"));
});

describe("Pinion extras", () => {
	test("durableCounter: increment/getCount, stateless and over a connection", { ...opts, skip: NO_DC }, async () => {
		await withClient(async (client) => {
			const k = uniq("dcount");
			const http = client.durableCounter.getOrCreate([k]);
			const conn = client.durableCounter.getOrCreate([k]).connect();
			try {
				assert.equal(await http.getCount(), 0);
				assert.equal(await http.increment(), 1);
				assert.equal(await conn.increment(5), 6);
				assert.equal(await http.increment(4), 10);
				assert.equal(await conn.getCount(), 10);
				assert.equal(await http.getCount(), 10);
			} finally {
				await conn.dispose();
			}
		});
	});

	test("durableCounter: 'count' from a stateless call reaches a subscribed connection", { ...opts, skip: NO_DC }, async () => {
		await withClient(async (client) => {
			const k = uniq("dcount-ev-http");
			const conn = client.durableCounter.getOrCreate([k]).connect();
			try {
				const got = collect(conn, "count");
				await conn.getCount(); // subscribed
				assert.equal(await client.durableCounter.getOrCreate([k]).increment(3), 3);
				await waitEvents(got, 1, "no 'count' event");
				assert.deepEqual(got, [[3]]);
			} finally {
				await conn.dispose();
			}
		});
	});

	// As `counter` (events.test.mjs): the event is queued before the emitting action's result, on
	// the caller's connection and on the other subscribed ones.
	test("durableCounter: 'count' from an action over a connection reaches the subscribed connections, before the result", { ...opts, skip: NO_DC }, async () => {
		await withClient(async (client) => {
			const k = uniq("dcount-ev-conn");
			const a = client.durableCounter.getOrCreate([k]).connect();
			const b = client.durableCounter.getOrCreate([k]).connect();
			try {
				const gotA = collect(a, "count");
				const gotB = collect(b, "count");
				await Promise.all([a.getCount(), b.getCount()]); // subscribed
				assert.equal(await a.increment(), 1);
				assert.deepEqual(gotA, [[1]], "event before the emitting action's result");
				assert.equal(await a.increment(5), 6);
				assert.deepEqual(gotA, [[1], [6]]);
				await b.getCount(); // barrier on b
				assert.deepEqual(gotB, [[1], [6]]);
			} finally {
				await Promise.all([a.dispose(), b.dispose()]);
			}
		});
	});

	test("durableCounter: 20 concurrent increments → 1..20", { ...opts, skip: NO_DC }, async () => {
		await withClient(async (client) => {
			const h = client.durableCounter.getOrCreate([uniq("dcount-many")]);
			const results = await Promise.all(Array.from({ length: 20 }, () => h.increment()));
			assert.deepEqual(results.sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i + 1));
			assert.equal(await h.getCount(), 20);
		});
	});

	test("counter.incrementSaved", { ...opts, skip: pinionOnly(HAS_INCREMENT_SAVED, "`counter.incrementSaved` action") }, async () => {
		await withClient(async (client) => {
			const h = client.counter.getOrCreate([uniq("saved")]);
			assert.equal(await h.incrementSaved(), 1);
			assert.equal(await h.incrementSaved(4), 5);
			assert.equal(await h.increment(), 6);
			assert.equal(await h.getCount(), 6);
		});
	});

	test("reminder.pending/cancel: a cancelled reminder is gone and never fires", { ...opts, skip: NO_SCHED }, async () => {
		await withClient(async (client) => {
			const h = client.reminder.getOrCreate([uniq("rem-cancel")]);
			assert.deepEqual(await h.pending(), []);
			const before = Date.now();
			assert.equal(await h.setReminder("far", 60_000), true);
			const after = Date.now();
			const pending = await h.pending();
			assert.equal(pending.length, 1, JSON.stringify(pending));
			const [{ id, dueMs }] = pending;
			assert.deepEqual(Object.keys(pending[0]).sort(), ["dueMs", "id"]);
			assert.equal(typeof id, "string");
			assert.ok(
				dueMs >= before + 60_000 - 50 && dueMs <= after + 60_000 + 50,
				`dueMs ${dueMs} not ~60 s after the call (${before}..${after})`,
			);
			assert.equal(await h.cancel(id), true);
			assert.deepEqual(await h.pending(), []);
			assert.equal(await h.cancel(id), false, "second cancel");
			assert.equal(await h.cancel("not-an-id"), false);
			assert.deepEqual(await h.sent(), []);
		});
	});

	test("reminder.pending: earliest first; a fired schedule leaves the list", { ...opts, skip: NO_SCHED }, async () => {
		await withClient(async (client) => {
			const h = client.reminder.getOrCreate([uniq("rem-pending")]);
			await h.setReminder("b", 60_000);
			await h.setReminder("soon", 200);
			await h.setReminder("a", 30_000);
			const list = await h.pending();
			assert.equal(list.length, 3, JSON.stringify(list));
			const dues = list.map((s) => s.dueMs);
			assert.deepEqual(dues, [...dues].sort((x, y) => x - y), "earliest first");
			assert.equal(new Set(list.map((s) => s.id)).size, 3, "distinct ids");
			await eventually(() => h.sent(), { until: (s) => s.length > 0, what: "'soon' never fired" });
			assert.deepEqual(await h.sent(), ["soon"]);
			const left = await h.pending();
			assert.deepEqual(left.map((s) => s.id), [list[1].id, list[2].id]);
			for (const s of left) assert.equal(await h.cancel(s.id), true);
			assert.deepEqual(await h.pending(), []);
		});
	});

	test("reminder.remindAt: returns the schedule id; fires at the given time (past: at once)", { ...opts, skip: NO_SCHED }, async () => {
		await withClient(async (client) => {
			const conn = client.reminder.getOrCreate([uniq("rem-at")]).connect();
			try {
				const got = collect(conn, "reminder");
				await conn.sent();
				const at = Date.now() + 300;
				const id = await conn.remindAt("at", at);
				assert.equal(typeof id, "string");
				assert.deepEqual(await conn.pending(), [{ id, dueMs: at }]);
				await conn.remindAt("past", Date.now() - 60_000);
				await waitEvents(got, 2, "remindAt reminders did not fire");
				assert.ok(Date.now() >= at - 5, "'at' fired before its time");
				assert.deepEqual(got.map(([e]) => e.message), ["past", "at"]);
				assert.deepEqual(await conn.pending(), []);
			} finally {
				await conn.dispose();
			}
		});
	});
});
