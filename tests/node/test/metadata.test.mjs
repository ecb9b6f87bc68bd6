// GET /metadata (spec §2): the official client awaits it before every
// operation and retries forever unless it gets a 2xx JSON body.
import assert from "node:assert/strict";
import { test } from "node:test";
import { ENDPOINT, TIMEOUT, withClient } from "../lib/helpers.mjs";

test("GET /metadata returns 2xx JSON (plain fetch)", { timeout: TIMEOUT }, async () => {
	for (const path of ["/metadata?namespace=default", "/metadata"]) {
		const res = await fetch(`${ENDPOINT}${path}`, {
			signal: AbortSignal.timeout(10_000),
		});
		const text = await res.text();
		assert.ok(res.ok, `GET ${path} -> ${res.status}: ${text.slice(0, 200)}`);
		let body;
		assert.doesNotThrow(() => {
			body = JSON.parse(text);
		}, `GET ${path} body is not JSON: ${text.slice(0, 200)}`);
		assert.equal(typeof body, "object", "metadata body must be a JSON object");
		assert.ok(body !== null && !Array.isArray(body), "metadata body must be a JSON object");
		// A non-empty clientEndpoint would redirect every later client request.
		assert.ok(
			body.clientEndpoint === undefined || body.clientEndpoint === null,
			`clientEndpoint must be omitted or null, got ${JSON.stringify(body.clientEndpoint)}`,
		);
	}
});

test("the official client gets past the metadata lookup", { timeout: TIMEOUT }, async () => {
	await withClient(async (client) => {
		const who = await client.counter.getOrCreate(["metadata-smoke"]).whoAmI();
		assert.equal(who.name, "counter");
		assert.equal(typeof who.actorId, "string");
		assert.ok(who.actorId.length > 0);
	});
});
