// Stateless HTTP actions (spec §7) and errors (spec §11).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { TIMEOUT, expectActorError, uniq, withClient } from "../lib/helpers.mjs";

const opts = { timeout: TIMEOUT };
const MASKED = "Internal error. Read the server logs for more details.";

describe("counter actions", () => {
	test("increment() by 1, increment(5) by 5, getCount()", opts, async () => {
		await withClient(async (client) => {
			const c = client.counter.getOrCreate([uniq("inc")]);
			assert.equal(await c.getCount(), 0);
			assert.equal(await c.increment(), 1);
			assert.equal(await c.increment(5), 6);
			assert.equal(await c.getCount(), 6);
			assert.equal(await c.increment(1), 7);
			assert.equal(await c.getCount(), 7);
		});
	});

	test("200 concurrent increment(1) on one fresh actor -> 1..200 exactly once", { timeout: 60_000 }, async () => {
		await withClient(async (client) => {
			const k = uniq("concurrent");
			const handle = client.counter.getOrCreate([k]);
			const results = await Promise.all(
				Array.from({ length: 200 }, () => handle.increment(1)),
			);
			const sorted = [...results].sort((a, b) => a - b);
			assert.deepEqual(
				sorted,
				Array.from({ length: 200 }, (_, i) => i + 1),
				"each of 1..200 returned exactly once",
			);
			assert.equal(await handle.getCount(), 200);
			assert.equal(await client.counter.get([k]).getCount(), 200);
		});
	});
});

describe("errors", () => {
	test("UserError: setName('x') -> user/name_too_short with metadata", opts, async () => {
		await withClient(async (client) => {
			const p = client.profile.getOrCreate([uniq("user-err")]);
			await expectActorError(p.setName("x"), {
				group: "user",
				code: "name_too_short",
				message: "Name too short",
				metadata: { minLength: 3, actual: 1 },
			});
			await expectActorError(p.setName(""), {
				group: "user",
				code: "name_too_short",
				message: "Name too short",
				metadata: { minLength: 3, actual: 0 },
			});
			await expectActorError(p.setName("ab"), {
				group: "user",
				code: "name_too_short",
				metadata: { minLength: 3, actual: 2 },
			});
			// State unchanged by the failures; a valid name works.
			assert.equal(await p.getName(), "unnamed");
			assert.equal(await p.setName("Carol"), "Carol");
			assert.equal(await p.getName(), "Carol");
			assert.equal(await p.setName("Zoë 🎉"), "Zoë 🎉");
			assert.equal(await p.getName(), "Zoë 🎉");
		});
	});

	test("internal errors are masked: boom() -> internal/internal_error", opts, async () => {
		await withClient(async (client) => {
			const p = client.profile.getOrCreate([uniq("boom")]);
			const err = await expectActorError(p.boom(), {
				group: "internal",
				code: "internal_error",
				message: MASKED,
				metadata: {},
			});
			assert.ok(!/secret/i.test(err.message), "message must not leak the thrown error");
			assert.ok(!/secret/i.test(JSON.stringify(err.metadata ?? null)), "metadata must not leak");
		});
	});

	test("the server keeps serving after boom()", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("after-boom");
			const p = client.profile.getOrCreate([k], { createWithInput: { name: "Dora" } });
			assert.equal(await p.getName(), "Dora");
			await expectActorError(p.boom(), { group: "internal", code: "internal_error" });
			// Same actor still works, state intact.
			assert.equal(await p.getName(), "Dora");
			assert.equal(await p.setName("Dorothy"), "Dorothy");
			await expectActorError(p.boom(), { group: "internal", code: "internal_error" });
			assert.equal(await client.profile.get([k]).getName(), "Dorothy");
			// Other actors too.
			assert.equal(await client.counter.getOrCreate([uniq("after-boom-c")]).increment(), 1);
		});
	});

	test("unknown action -> action/not_found", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("no-action");
			const c = client.counter.getOrCreate([k]);
			const expected = {
				group: "action",
				code: "not_found",
				message: "Action 'doesNotExist' not found. Validate the action exists on your actor.",
				metadata: undefined,
			};
			// Explicit API of the 2.0.33 handle.
			await expectActorError(c.action({ name: "doesNotExist", args: [] }), expected);
			// Proxy method (any unknown property is an action).
			await expectActorError(c.doesNotExist(), expected);
			await expectActorError(client.profile.getOrCreate([k]).action({ name: "increment", args: [1] }), {
				group: "action",
				code: "not_found",
				message: "Action 'increment' not found. Validate the action exists on your actor.",
			});
			// The actor is unaffected.
			assert.equal(await c.increment(), 1);
		});
	});

	test("action names are passed through exactly (encoded in the URL)", opts, async () => {
		await withClient(async (client) => {
			const c = client.counter.getOrCreate([uniq("names")]);
			for (const name of ["does/not/exist", "with space", "ünïcødé", "getcount", "GetCount"]) {
				await expectActorError(c.action({ name, args: [] }), {
					group: "action",
					code: "not_found",
					message: `Action '${name}' not found. Validate the action exists on your actor.`,
				});
			}
			assert.equal(await c.action({ name: "increment", args: [3] }), 3);
			assert.equal(await c.action({ name: "getCount", args: [] }), 3);
		});
	});
});
