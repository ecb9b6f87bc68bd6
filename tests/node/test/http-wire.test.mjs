// The raw HTTP action exchange (spec §7, §11) with plain fetch: status codes
// and JSON bodies must match the reference byte-for-byte in content (the
// client only sees ok / not ok, but non-RivetKit callers see the rest).
import assert from "node:assert/strict";
import { test } from "node:test";
import { ENDPOINT, IS_REFERENCE, TIMEOUT, uniq, withClient } from "../lib/helpers.mjs";

const opts = { timeout: TIMEOUT };

async function post(actorId, action, args, headers = { "x-rivet-encoding": "json" }) {
	const res = await fetch(`${ENDPOINT}/gateway/${encodeURIComponent(actorId)}/action/${encodeURIComponent(action)}`, {
		method: "POST",
		headers: { "content-type": "application/json", ...headers },
		body: JSON.stringify({ args }),
		signal: AbortSignal.timeout(10_000),
	});
	const text = await res.text();
	let body;
	assert.doesNotThrow(() => {
		body = JSON.parse(text);
	}, `${action}: body is not JSON: ${text.slice(0, 200)}`);
	return { status: res.status, contentType: res.headers.get("content-type") ?? "", body };
}

// The reference labels error bodies text/plain (its quirk, spec §3.1);
// Pinion must label them application/json.
function assertErrorContentType(r) {
	if (!IS_REFERENCE) assert.match(r.contentType, /application\/json/, "error content-type");
}

test("raw action success: 200 application/json {output}", opts, async () => {
	const id = await withClient((c) => c.counter.getOrCreate([uniq("raw-ok")]).resolve());
	let r = await post(id, "increment", [5]);
	assert.equal(r.status, 200);
	assert.match(r.contentType, /application\/json/);
	assert.deepEqual(r.body, { output: 5 });
	// Tagged values pass through unchanged.
	const tagged = [["$$notAType", 1], ["$Uint8Array", "AQI="], ["$BigInt", "12"], { a: ["$$b", []] }];
	r = await post(id, "echo", tagged);
	assert.equal(r.status, 200);
	assert.deepEqual(r.body, { output: tagged });
	// Missing x-rivet-encoding defaults to JSON.
	r = await post(id, "getCount", [], {});
	assert.equal(r.status, 200);
	assert.deepEqual(r.body, { output: 5 });
});

test("raw action errors: exact status and bodies", opts, async () => {
	const id = await withClient((c) => c.profile.getOrCreate([uniq("raw-err")]).resolve());

	let r = await post(id, "setName", ["x"]);
	assert.equal(r.status, 400);
	assertErrorContentType(r);
	assert.deepEqual(r.body, {
		group: "user",
		code: "name_too_short",
		message: "Name too short",
		metadata: { minLength: 3, actual: 1 },
	});

	r = await post(id, "boom", []);
	assert.equal(r.status, 500);
	assertErrorContentType(r);
	assert.deepEqual(r.body, {
		group: "internal",
		code: "internal_error",
		message: "Internal error. Read the server logs for more details.",
		metadata: {},
	});

	r = await post(id, "doesNotExist", []);
	assert.equal(r.status, 400);
	assertErrorContentType(r);
	assert.deepEqual(r.body, {
		group: "action",
		code: "not_found",
		message: "Action 'doesNotExist' not found. Validate the action exists on your actor.",
	});
});
