// onBeforeActionResponse (the `transform` actor) over stateless HTTP actions and over a connection.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { TIMEOUT, uniq, withClient } from "../lib/helpers.mjs";

const opts = { timeout: TIMEOUT };

describe("onBeforeActionResponse over HTTP", () => {
	test("every output is wrapped", opts, async () => {
		await withClient(async (client) => {
			const t = client.transform.getOrCreate([uniq("transform")]);
			assert.deepEqual(await t.value(), { wrapped: 42 });
			assert.deepEqual(await t.echoArgs("a", ["$x", 1], { k: null }), {
				wrapped: ["a", ["$x", 1], { k: null }],
			});
			assert.deepEqual(await t.echoArgs(), { wrapped: [] });
		});
	});

	test("other actors are not affected", opts, async () => {
		await withClient(async (client) => {
			assert.equal(await client.counter.getOrCreate([uniq("plain")]).increment(3), 3);
		});
	});
});

describe("onBeforeActionResponse over a connection", () => {
	test("every output is wrapped", opts, async () => {
		await withClient(async (client) => {
			const k = uniq("transform-ws");
			const conn = client.transform.getOrCreate([k]).connect();
			try {
				assert.deepEqual(await conn.value(), { wrapped: 42 });
				assert.deepEqual(await conn.echoArgs(1, "a"), { wrapped: [1, "a"] });
				assert.deepEqual(await conn.echoArgs(), { wrapped: [] });
				const all = await Promise.all([conn.value(), conn.echoArgs(["$x", 1]), conn.echoArgs(null)]);
				assert.deepEqual(all, [{ wrapped: 42 }, { wrapped: [["$x", 1]] }, { wrapped: [null] }]);
				// Same actor over HTTP: also wrapped.
				assert.deepEqual(await client.transform.getOrCreate([k]).value(), { wrapped: 42 });
			} finally {
				await conn.dispose();
			}
		});
	});
});
