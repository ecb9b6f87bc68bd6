// onBeforeActionResponse (the `transform` actor) over stateless HTTP actions. The WebSocket half
// joins with connections.
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
