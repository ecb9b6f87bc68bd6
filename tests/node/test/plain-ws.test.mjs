// A non-official client on the connection route (spec §8): plain `ws`, JSON frames checked
// exactly as the RivetKit 2.0.33 reference sends them. The official client is used only to create
// actors and for stateless calls that trigger events.
//
// "Nothing arrived" is checked with barriers: frames of one socket are ordered, so when the
// response to a later ActionRequest is the next frame, no Event was sent before it.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { TIMEOUT, uniq, withClient } from "../lib/helpers.mjs";
import {
	WsPeer,
	actionRequest,
	connParamsProtocol,
	gatewayWsUrl,
	subscriptionRequest,
} from "../lib/ws.mjs";

const opts = { timeout: TIMEOUT };
const JSON_PROTOCOLS = ["rivet", "rivet_encoding.json"];
const MASKED = "Internal error. Read the server logs for more details.";

const big = (n) => ["$BigInt", String(n)];
const response = (id, output) => ({ body: { tag: "ActionResponse", val: { id: big(id), output } } });
const event = (name, ...args) => ({ body: { tag: "Event", val: { name, args } } });

/** Open /connect, check the handshake and the Init frame; returns the peer. */
async function openConn(actorId, protocols = JSON_PROTOCOLS) {
	const peer = await WsPeer.open(gatewayWsUrl(actorId, "/connect"), protocols);
	try {
		assert.equal(peer.upgradeHeaders["sec-websocket-protocol"], "rivet");
		assert.equal(peer.protocol, "rivet");
		return peer;
	} catch (err) {
		peer.dispose();
		throw err;
	}
}

async function expectInit(peer, actorId) {
	const init = await peer.nextJson();
	assert.equal(typeof init?.body?.val?.connectionId, "string", `not an Init frame: ${JSON.stringify(init)}`);
	assert.ok(init.body.val.connectionId.length > 0);
	assert.deepEqual(init, {
		body: { tag: "Init", val: { actorId, connectionId: init.body.val.connectionId } },
	});
	return init.body.val.connectionId;
}

describe("connection protocol with a plain WebSocket", () => {
	test("Init, ActionResponse, Error, subscriptions and Event ordering, close 1000", opts, async () => {
		await withClient(async (client) => {
			const handle = client.counter.getOrCreate([uniq("plain-conn")]);
			const id = await handle.resolve();
			const peer = await openConn(id);
			try {
				// Sent right after the handshake, before Init is read: must be accepted.
				peer.send(actionRequest(0, "increment", [5]));
				await expectInit(peer, id); // Init is the first frame
				assert.deepEqual(await peer.nextJson(), response(0, 5));

				peer.send(actionRequest(1, "nope"));
				assert.deepEqual(await peer.nextJson(), {
					body: {
						tag: "Error",
						val: {
							group: "action",
							code: "not_found",
							message: "Action 'nope' not found. Validate the action exists on your actor.",
							actionId: big(1),
						},
					},
				});

				// Not subscribed: a foreign broadcast is not delivered.
				assert.equal(await handle.increment(1), 6);
				peer.send(actionRequest(2, "getCount"));
				assert.deepEqual(await peer.nextJson(), response(2, 6));

				// Subscribed: own call -> Event, then the ActionResponse of the call that emitted it.
				peer.send(subscriptionRequest("count", true));
				peer.send(actionRequest(3, "increment", [2]));
				assert.deepEqual(await peer.nextJson(), event("count", 8));
				assert.deepEqual(await peer.nextJson(), response(3, 8));
				// Foreign (stateless) call -> Event.
				assert.equal(await handle.increment(1), 9);
				assert.deepEqual(await peer.nextJson(), event("count", 9));

				// Unsubscribed again: nothing.
				peer.send(subscriptionRequest("count", false));
				peer.send(actionRequest(4, "getCount")); // processed after the unsubscription
				assert.deepEqual(await peer.nextJson(), response(4, 9));
				assert.equal(await handle.increment(1), 10);
				peer.send(actionRequest(5, "increment", [1]));
				assert.deepEqual(await peer.nextJson(), response(5, 11));

				assert.ok(peer.frames.every((f) => !f.binary), "JSON encoding uses text frames");
				const closed = await peer.close(1000, "bye");
				assert.equal(closed.code, 1000);
				assert.deepEqual(peer.unread(), []);
			} finally {
				peer.dispose();
			}
		});
	});

	test("Error frames carry the action id, including 0; masked internal errors", opts, async () => {
		await withClient(async (client) => {
			const id = await client.profile.getOrCreate([uniq("plain-err")]).resolve();
			const peer = await openConn(id);
			try {
				await expectInit(peer, id);
				peer.send(actionRequest(0, "setName", ["x"]));
				assert.deepEqual(await peer.nextJson(), {
					body: {
						tag: "Error",
						val: {
							group: "user",
							code: "name_too_short",
							message: "Name too short",
							metadata: { minLength: 3, actual: 1 },
							actionId: big(0),
						},
					},
				});
				peer.send(actionRequest(1, "boom"));
				const boom = await peer.next();
				assert.ok(!/secret/i.test(boom.data), `leaks the thrown error: ${boom.data}`);
				assert.deepEqual(JSON.parse(boom.data), {
					body: {
						tag: "Error",
						val: { group: "internal", code: "internal_error", message: MASKED, metadata: {}, actionId: big(1) },
					},
				});
				// The socket stays open after action errors.
				peer.send(actionRequest(2, "getName"));
				assert.deepEqual(await peer.nextJson(), response(2, "unnamed"));
				assert.equal(peer.closeInfo, null);
			} finally {
				await peer.close(1000);
				peer.dispose();
			}
		});
	});

	// `reminder.sendReminder` returns undefined (and broadcasts "reminder" {message}).
	test("ids: echoed exactly (beyond 2^53, out of order); undefined output is omitted", opts, async () => {
		await withClient(async (client) => {
			const id = await client.reminder.getOrCreate([uniq("plain-ids")]).resolve();
			const peer = await openConn(id);
			try {
				await expectInit(peer, id);
				peer.send(subscriptionRequest("reminder", true));
				// sendReminder returns undefined and broadcasts "reminder" {message}.
				peer.send(actionRequest("9007199254740993", "sendReminder", ["m"]));
				assert.deepEqual(await peer.nextJson(), event("reminder", { message: "m" }));
				assert.deepEqual(await peer.nextJson(), {
					body: { tag: "ActionResponse", val: { id: big("9007199254740993") } },
				});
				peer.send(actionRequest(7, "sent"));
				assert.deepEqual(await peer.nextJson(), response(7, ["m"]));
			} finally {
				await peer.close(1000);
				peer.dispose();
			}
		});
	});

	test("concurrent requests: one response per id, results 1..20", opts, async () => {
		await withClient(async (client) => {
			const id = await client.counter.getOrCreate([uniq("plain-many")]).resolve();
			const peer = await openConn(id);
			try {
				await expectInit(peer, id);
				for (let i = 0; i < 20; i++) peer.send(actionRequest(i, "increment", [1]));
				const byId = new Map();
				for (let i = 0; i < 20; i++) {
					const f = await peer.nextJson();
					assert.equal(f.body.tag, "ActionResponse", JSON.stringify(f));
					assert.equal(f.body.val.id[0], "$BigInt");
					assert.ok(!byId.has(f.body.val.id[1]), `duplicate response for id ${f.body.val.id[1]}`);
					byId.set(f.body.val.id[1], f.body.val.output);
				}
				assert.deepEqual([...byId.keys()].sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => String(i)));
				assert.deepEqual([...byId.values()].sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i + 1));
			} finally {
				await peer.close(1000);
				peer.dispose();
			}
		});
	});

	test("conn params via subprotocol; conn.send reaches an unsubscribed connection, broadcast does not", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("plain-chat");
			const id = await client.chatRoom.getOrCreate([k]).resolve();
			const peer = await openConn(id, [...JSON_PROTOCOLS, connParamsProtocol({ userId: "zed", token: "ok" })]);
			try {
				await expectInit(peer, id);
				peer.send(actionRequest(0, "whoAmI"));
				assert.deepEqual(await peer.nextJson(), response(0, "zed"));

				const dan = client.chatRoom.getOrCreate([k], { params: { userId: "dan" } });
				assert.equal(await dan.notifyOthers("yo"), 1);
				assert.deepEqual(await peer.nextJson(), event("notification", { from: "dan", text: "yo" }));

				assert.equal(await dan.send("msg"), "dan: msg");
				peer.send(actionRequest(1, "send", ["me"]));
				assert.deepEqual(await peer.nextJson(), response(1, "zed: me"), "no 'message' Event without a subscription");
				peer.send(actionRequest(2, "history"));
				assert.deepEqual(await peer.nextJson(), response(2, ["dan: msg", "zed: me"]));
			} finally {
				await peer.close(1000);
				peer.dispose();
			}
		});
	});

	test("rejected by onBeforeConnect: 101 'rivet', then close 1011 'forbidden', no Init", opts, async () => {
		await withClient(async (client) => {
			const id = await client.chatRoom.getOrCreate([uniq("plain-bad")]).resolve();
			const peer = await openConn(id, [...JSON_PROTOCOLS, connParamsProtocol({ userId: "eve", token: "bad" })]);
			try {
				const closed = await peer.waitClosed();
				assert.deepEqual(closed, { code: 1011, reason: "forbidden" });
				// The reference sends no frame at all. An Error frame with actionId null before the
				// close is the only acceptable alternative (spec §8.6).
				for (const f of peer.frames) {
					assert.deepEqual(JSON.parse(f.data), {
						body: {
							tag: "Error",
							val: { group: "user", code: "forbidden", message: "Forbidden: bad token", actionId: null },
						},
					});
				}
			} finally {
				peer.dispose();
			}
		});
	});

	test("an unparsable frame closes the socket with 1011", opts, async () => {
		await withClient(async (client) => {
			const id = await client.counter.getOrCreate([uniq("plain-garbage")]).resolve();
			const peer = await openConn(id);
			try {
				await expectInit(peer, id);
				peer.send("not json");
				// The reference closes with reason "internal_error"; only the code is asserted.
				const closed = await peer.waitClosed();
				assert.equal(closed.code, 1011);
				assert.deepEqual(peer.unread(), []);
			} finally {
				peer.dispose();
			}
		});
	});
});
