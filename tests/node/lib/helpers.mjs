// Shared helpers for the Pinion Node test suite (not a test file itself:
// it lives outside test/ so `node --test test/` does not run it).
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after } from "node:test";
import { ActorError, createClient } from "rivetkit/client";

export { ActorError };

const trimSlash = (s) => s.replace(/\/+$/, "");

/** Root endpoint of the server under test. */
export const ENDPOINT = trimSlash(
	process.env.PINION_ENDPOINT || "http://127.0.0.1:6420",
);
/** Optional endpoint with a base path (e.g. http://127.0.0.1:PORT/api/rivet). */
export const BASE_ENDPOINT = process.env.PINION_BASE_ENDPOINT
	? trimSlash(process.env.PINION_BASE_ENDPOINT)
	: "";

/**
 * The one switch for known quirks of the RivetKit 2.0.33 reference server.
 * PINION_TARGET=reference: the reference's local manager does not split the
 * serialized key string, so an actor sees `c.key == [serializedKey]` (one
 * element) instead of its key parts (spec §4). Everything else is asserted
 * identically for both targets.
 */
export const IS_REFERENCE = process.env.PINION_TARGET === "reference";

/** Unique per process (each test file runs in its own process). */
export const RUN_ID = `${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
let seq = 0;
/** A key part unique to this test run. */
export function uniq(label = "k") {
	seq += 1;
	return `${label}-${RUN_ID}-${seq}`;
}

/** Per-test timeout (ms): a hung request fails the test instead of the run. */
export const TIMEOUT = 30_000;

/**
 * Safety net for Node 20 (no --test-force-exit in the npm script): when a
 * test timed out while a request to a hung server is still open, that socket
 * (or the client's endless metadata retry) keeps this test file's process
 * alive forever after its tests have finished. Once the file's tests are
 * done, an unref'd timer force-exits if something still holds the event loop
 * (it never fires when the process exits normally).
 */
after(() => {
	setTimeout(() => {
		console.error("helpers: open handles left after the tests finished (hung request?); forcing exit");
		process.exit(process.exitCode || 1);
	}, 5_000).unref();
});

/** Key serialization of the 2.0.33 client (spec §4), used for the reference quirk. */
export function serializeKey(parts) {
	if (parts.length === 0) return "/";
	return parts
		.map((p) =>
			p === "" ? "\\0" : p.replace(/\\/g, "\\\\").replace(/\//g, "\\/"),
		)
		.join("/");
}

/** What `whoAmI().key` must return for an actor created with key `parts`. */
export function expectedKey(parts) {
	return IS_REFERENCE ? [serializeKey(parts)] : parts;
}

const preflights = new Map();
/**
 * Plain-fetch GET {endpoint}/metadata once per endpoint and fail fast with a
 * clear message. Without this, a server lacking /metadata makes the official
 * client retry forever (spec §2) and the test file would hang.
 */
export function preflight(endpoint = ENDPOINT) {
	if (!preflights.has(endpoint)) {
		preflights.set(
			endpoint,
			(async () => {
				const url = `${endpoint}/metadata?namespace=default`;
				let res;
				try {
					res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
				} catch (err) {
					throw new Error(`server not reachable: GET ${url}: ${err.message}`);
				}
				const text = await res.text();
				if (!res.ok) {
					throw new Error(
						`GET ${url} -> ${res.status} (the client needs a 2xx JSON body): ${text.slice(0, 200)}`,
					);
				}
				try {
					return JSON.parse(text);
				} catch {
					throw new Error(
						`GET ${url} -> body is not JSON (the client would retry forever): ${text.slice(0, 200)}`,
					);
				}
			})(),
		);
	}
	return preflights.get(endpoint);
}

/** Run `fn(client)` with a fresh official client (JSON encoding); always disposes it. */
export async function withClient(fn, { endpoint = ENDPOINT } = {}) {
	await preflight(endpoint);
	const client = createClient({ endpoint, encoding: "json" });
	try {
		return await fn(client);
	} finally {
		await client.dispose();
	}
}

/**
 * Assert that `promise` rejects with an ActorError with the given fields.
 * Only the fields present in `expected` are checked; a `metadata` key that is
 * present (even as undefined) is compared with deepEqual. Returns the error.
 * `anyClass`: accept any error object with these fields, not only the client's
 * ActorError (handle.resolve() rethrows the internal ActorNotFound unwrapped).
 */
export async function expectActorError(promise, expected, { anyClass = false } = {}) {
	let caught;
	await assert.rejects(promise, (err) => {
		caught = err;
		return true;
	});
	const summary = JSON.stringify({
		name: caught?.constructor?.name,
		group: caught?.group,
		code: caught?.code,
		message: caught?.message,
		metadata: caught?.metadata,
	});
	assert.ok(
		anyClass ? caught instanceof Error : caught instanceof ActorError,
		`expected an ActorError, got ${summary}`,
	);
	for (const field of ["group", "code", "message"]) {
		if (field in expected) {
			assert.equal(caught[field], expected[field], `${field} mismatch: ${summary}`);
		}
	}
	if ("metadata" in expected) {
		assert.deepEqual(caught.metadata, expected.metadata, `metadata mismatch: ${summary}`);
	}
	return caught;
}

/**
 * Whether the server registers actor type `name` (from `GET /metadata`'s `actorNames`; servers
 * that do not list their types are assumed to have it). For tests of actors whose features a
 * server may not have yet, so that they are skipped with a reason instead of failing.
 */
export async function serverHasActor(name) {
	const res = await fetch(`${ENDPOINT}/metadata`);
	const meta = await res.json();
	return !meta.actorNames || Object.hasOwn(meta.actorNames, name);
}

/**
 * Whether actor type `name` has action `action` (for server-specific extras that `/metadata`
 * cannot show): calls it with `args` on a throwaway actor (fresh key) and returns false only on
 * `action/not_found`. Other errors propagate.
 */
export async function serverHasAction(name, action, args = []) {
	if (!(await serverHasActor(name))) return false;
	return withClient(async (client) => {
		try {
			await client[name].getOrCreate([uniq(`probe-${action}`)]).action({ name: action, args });
			return true;
		} catch (err) {
			if (err?.group === "action" && err?.code === "not_found") return false;
			throw err;
		}
	});
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Errors a server may answer while an actor is going to sleep or being destroyed (spec §12):
 * the reference answers `internal/internal_error` ("Actor is stopping") or `actor/stopping` for
 * a short time; a connection's in-flight actions reject with the client's
 * `Error("Connection closed/lost (code: …)")` when the server closes the socket (the client
 * then reconnects, §8.7).
 */
export function isTransient(err) {
	if (err?.group === "internal" && err?.code === "internal_error") return true;
	if (err?.group === "actor" && err?.code === "stopping") return true;
	return /^Connection (closed|lost) \(code/.test(err?.message ?? "");
}

const describeErr = (err) =>
	JSON.stringify({ name: err?.constructor?.name, group: err?.group, code: err?.code, message: err?.message });

/**
 * Call `fn()` until `until(result)` holds and return that result: for effects that the server
 * applies asynchronously (a schedule firing, the reference's asynchronous sleep/destroy).
 * Errors for which `retryIf(err)` holds (default: `isTransient`) are retried, others fail at once.
 * Fails after `timeoutMs` with the last result or error (`what` names the condition).
 */
export async function eventually(
	fn,
	{ until = () => true, timeoutMs = 10_000, intervalMs = 25, retryIf = isTransient, what = "condition" } = {},
) {
	const deadline = Date.now() + timeoutMs;
	for (;;) {
		let last;
		try {
			const result = await fn();
			if (until(result)) return result;
			last = `last result ${JSON.stringify(result)}`;
		} catch (err) {
			if (!retryIf(err)) throw err;
			last = `last error ${describeErr(err)}`;
		}
		if (Date.now() > deadline) assert.fail(`${what}: not reached within ${timeoutMs} ms (${last})`);
		await sleep(intervalMs);
	}
}
