// Actor resolution through the manager API (spec §5): create (with CBOR
// input), getOrCreate (createWithInput), get, getForId, resolve().
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { TIMEOUT, expectActorError, uniq, withClient } from "../lib/helpers.mjs";

const opts = { timeout: TIMEOUT };

describe("create and input", () => {
	test("create with input -> createState sees it", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("p");
			const handle = await client.profile.create([k], { input: { name: "Ann" } });
			assert.equal(await handle.getName(), "Ann");
			assert.equal(await client.profile.get([k]).getName(), "Ann");
			assert.equal(await client.profile.getOrCreate([k]).getName(), "Ann");
		});
	});

	test("create without input -> 'unnamed'", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("p-noinput");
			const handle = await client.profile.create([k]);
			assert.equal(await handle.getName(), "unnamed");
			// createWithInput on an existing actor is ignored.
			const again = client.profile.getOrCreate([k], { createWithInput: { name: "Late" } });
			assert.equal(await again.getName(), "unnamed");
		});
	});

	test("create with input {} -> 'unnamed'", opts, async () => {
		await withClient(async (client) => {
			const handle = await client.profile.create([uniq("p-empty")], { input: {} });
			assert.equal(await handle.getName(), "unnamed");
		});
	});

	test("getOrCreate createWithInput is used only at creation", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("p-goc");
			const first = client.profile.getOrCreate([k], { createWithInput: { name: "Bob" } });
			assert.equal(await first.getName(), "Bob");
			const second = client.profile.getOrCreate([k], { createWithInput: { name: "Other" } });
			assert.equal(await second.getName(), "Bob");
			assert.equal(await client.profile.getOrCreate([k]).getName(), "Bob");
			assert.equal(await client.profile.get([k]).getName(), "Bob");
		});
	});

	test("input is CBOR-decoded correctly (unicode, long strings, mixed values)", opts, async () => {
		await withClient(async (client) => {
			const names = [
				"Zoë 🎉 日本語 \"q\" \\ \u0000",
				"x".repeat(300), // 16-bit CBOR string length
			];
			for (const name of names) {
				const h = await client.profile.create([uniq("p-cbor")], {
					input: {
						name,
						extra: {
							float: 1.5,
							big: 2 ** 40, // float64 in cbor-x
							neg: -123456,
							list: [1, "x", null, true, false, [], {}],
							undef: undefined, // CBOR 0xf7
							bytes: new Uint8Array([1, 2, 3]),
						},
					},
				});
				assert.equal(await h.getName(), name);
			}
		});
	});

	test("input with a 70,000-byte string (CBOR 32-bit length, ~93 KB request body)", opts, async () => {
		await withClient(async (client) => {
			const name = "y".repeat(70_000);
			const h = await client.profile.create([uniq("p-bigin")], { input: { name } });
			const got = await h.getName();
			assert.equal(got.length, name.length);
			assert.equal(got, name);
			const g = client.profile.getOrCreate([uniq("p-bigin")], { createWithInput: { name } });
			assert.equal((await g.getName()).length, name.length);
		});
	});

	test("duplicate create -> actor/duplicate_key", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("p-dup");
			await client.profile.create([k], { input: { name: "First" } });
			await expectActorError(client.profile.create([k], { input: { name: "Second" } }), {
				group: "actor",
				code: "duplicate_key",
			});
			// The original actor is untouched.
			assert.equal(await client.profile.get([k]).getName(), "First");

			// Also after getOrCreate.
			const k2 = uniq("c-dup");
			assert.equal(await client.counter.getOrCreate([k2]).increment(), 1);
			await expectActorError(client.counter.create([k2]), {
				group: "actor",
				code: "duplicate_key",
			});
			assert.equal(await client.counter.get([k2]).getCount(), 1);
		});
	});
});

describe("get / getForId / resolve", () => {
	test("get of a missing actor -> actor/not_found, and does not create it", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("missing");
			await expectActorError(client.counter.get([k]).getCount(), {
				group: "actor",
				code: "not_found",
			});
			// resolve() rethrows the client's internal ActorNotFound (same
			// group/code, but not an instance of the exported ActorError).
			await expectActorError(
				client.counter.get([k]).resolve(),
				{ group: "actor", code: "not_found" },
				{ anyClass: true },
			);
			await expectActorError(client.counter.get([k]).increment(), {
				group: "actor",
				code: "not_found",
			});
			// Still missing: get() never creates.
			await expectActorError(client.counter.get([k]).whoAmI(), {
				group: "actor",
				code: "not_found",
			});
			// getOrCreate then starts a fresh actor.
			assert.equal(await client.counter.getOrCreate([k]).getCount(), 0);
		});
	});

	test("getForId with the id from whoAmI / resolve()", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("byid");
			const handle = client.counter.getOrCreate([k]);
			const { actorId } = await handle.whoAmI();
			assert.equal(await handle.resolve(), actorId);
			assert.equal(await handle.increment(4), 4);

			const byId = client.counter.getForId(actorId);
			assert.equal(await byId.getCount(), 4);
			assert.equal(await byId.increment(1), 5);
			assert.equal((await byId.whoAmI()).actorId, actorId);
			assert.equal(await byId.resolve(), actorId);

			// ClientRaw.getForId(name, id)
			const raw = client.getForId("counter", actorId);
			assert.equal(await raw.getCount(), 5);

			// The id from create() works the same way.
			const created = await client.profile.create([uniq("p-byid")], { input: { name: "Cid" } });
			const pid = await created.resolve();
			assert.equal(await client.profile.getForId(pid).getName(), "Cid");
			assert.equal(await client.getForId("profile", pid).getName(), "Cid");
		});
	});

	test("getForId with an unknown id -> actor/not_found", opts, async () => {
		await withClient(async (client) => {
			for (const id of ["0000000000000000", `no-such-actor-${uniq()}`]) {
				await expectActorError(client.counter.getForId(id).getCount(), {
					group: "actor",
					code: "not_found",
				});
				await expectActorError(client.getForId("profile", id).getName(), {
					group: "actor",
					code: "not_found",
				});
			}
		});
	});

	test("getForId with an id of another actor type -> actor/not_found", opts, async () => {
		await withClient(async (client) => {
			const counterId = await client.counter.getOrCreate([uniq("typed")]).resolve();
			// The client checks the `name` of the actor returned for the id.
			await expectActorError(client.profile.getForId(counterId).getName(), {
				group: "actor",
				code: "not_found",
			});
		});
	});

	test("resolve() pins the handle; calls go through the resolved id", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("resolve");
			const handle = client.counter.getOrCreate([k]);
			const id = await handle.resolve();
			assert.equal(typeof id, "string");
			assert.ok(id.length > 0);
			assert.equal(await handle.resolve(), id, "resolve() is stable");
			assert.equal(await handle.increment(), 1);
			assert.equal(await handle.increment(2), 3);
			const who = await handle.whoAmI();
			assert.equal(who.actorId, id);
			assert.equal(await client.counter.getForId(id).getCount(), 3);
			assert.equal(await client.counter.get([k]).resolve(), id);
		});
	});
});
