// Base path (spec §1): with endpoint http://host:port/api/rivet every request
// goes under /api/rivet. Runs only when PINION_BASE_ENDPOINT is set (the
// with-server launcher sets it when the server is given --base-path X).
import assert from "node:assert/strict";
import { test } from "node:test";
import { BASE_ENDPOINT, TIMEOUT, uniq, withClient } from "../lib/helpers.mjs";

const skip = BASE_ENDPOINT
	? false
	: "PINION_BASE_ENDPOINT not set (e.g. http://127.0.0.1:PORT/api/rivet); start the server with --base-path to run this";

test("base path: metadata, getOrCreate + increment + get", { timeout: TIMEOUT, skip }, async () => {
	const res = await fetch(`${BASE_ENDPOINT}/metadata?namespace=default`, {
		signal: AbortSignal.timeout(10_000),
	});
	assert.ok(res.ok, `GET ${BASE_ENDPOINT}/metadata -> ${res.status}`);
	JSON.parse(await res.text());

	await withClient(
		async (client) => {
			const k = uniq("base");
			const c = client.counter.getOrCreate([k]);
			assert.equal(await c.increment(), 1);
			assert.equal(await c.increment(5), 6);
			assert.equal(await client.counter.get([k]).getCount(), 6);
			const who = await client.counter.get([k]).whoAmI();
			assert.equal(who.name, "counter");
			assert.equal(await client.counter.getForId(who.actorId).getCount(), 6);
		},
		{ endpoint: BASE_ENDPOINT },
	);
});
