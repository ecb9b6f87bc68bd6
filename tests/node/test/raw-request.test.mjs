// Raw HTTP to an actor's onRequest (spec §9): through the official client's handle.fetch and
// through a plain fetch of the gateway URL.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ENDPOINT, TIMEOUT, uniq, withClient } from "../lib/helpers.mjs";

const opts = { timeout: TIMEOUT };

describe("raw onRequest", () => {
	test("handle.fetch reaches onRequest with the path below /request and the query", opts, async () => {
		await withClient(async (client) => {
			const api = client.api.getOrCreate([uniq("api")]);
			const post = await api.fetch("some/path?x=1", {
				method: "POST",
				headers: { "x-custom": "1" },
				body: "hello",
			});
			assert.equal(post.status, 200);
			assert.match(post.headers.get("content-type") ?? "", /application\/json/);
			assert.deepEqual(await post.json(), { count: 1, method: "POST", path: "/some/path", query: "?x=1" });
			const get = await api.fetch("/other");
			assert.deepEqual(await get.json(), { count: 1, method: "GET", path: "/other", query: "" });
			assert.equal(await api.getCount(), 1);
		});
	});

	test("a plain fetch of the gateway URL works too", opts, async () => {
		await withClient(async (client) => {
			const api = client.api.getOrCreate([uniq("api-plain")]);
			const id = await api.resolve();
			const url = `${ENDPOINT}/gateway/${encodeURIComponent(id)}/request/plain?y=2`;
			const first = await fetch(url, { method: "POST", body: "x" });
			assert.deepEqual(await first.json(), { count: 1, method: "POST", path: "/plain", query: "?y=2" });
			const second = await fetch(url);
			assert.deepEqual(await second.json(), { count: 1, method: "GET", path: "/plain", query: "?y=2" });
		});
	});

	test("an actor without onRequest answers 404 handler/request_not_defined", opts, async () => {
		await withClient(async (client) => {
			const counter = client.counter.getOrCreate([uniq("no-raw")]);
			const id = await counter.resolve();
			const res = await fetch(`${ENDPOINT}/gateway/${encodeURIComponent(id)}/request/x`);
			assert.equal(res.status, 404);
			const body = await res.json();
			assert.equal(body.group, "handler");
			assert.equal(body.code, "request_not_defined");
		});
	});
});
