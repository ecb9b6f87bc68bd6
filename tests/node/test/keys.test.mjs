// Actor keys (spec §4): the client serializes a key array into one string;
// the server must map equal keys to the same actor, distinct keys to distinct
// actors, and (Pinion) give the actor back its key parts.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { RUN_ID, TIMEOUT, expectedKey, uniq, withClient } from "../lib/helpers.mjs";

describe("actor keys", () => {
	test("same single key -> same actor, shared count", { timeout: TIMEOUT }, async () => {
		await withClient(async (client) => {
			const k = uniq("single");
			const a = client.counter.getOrCreate(k); // string shorthand for [k]
			const b = client.counter.getOrCreate([k]);
			const whoA = await a.whoAmI();
			const whoB = await b.whoAmI();
			assert.deepEqual(whoA, { name: "counter", key: expectedKey([k]), actorId: whoA.actorId });
			assert.equal(whoB.actorId, whoA.actorId);
			assert.equal(await a.increment(2), 2);
			assert.equal(await b.increment(3), 5);
			assert.equal(await client.counter.get([k]).getCount(), 5);
		});
	});

	test("compound key ['a','b/c',''] -> actor sees its key parts", { timeout: TIMEOUT }, async () => {
		await withClient(async (client) => {
			const key = [`a-${RUN_ID}`, "b/c", ""];
			const who = await client.counter.getOrCreate(key).whoAmI();
			assert.deepEqual(who, { name: "counter", key: expectedKey(key), actorId: who.actorId });
			// A second handle with an equal (new) array reaches the same actor.
			const again = await client.counter.getOrCreate([...key]).whoAmI();
			assert.equal(again.actorId, who.actorId);
			assert.equal(await client.counter.getOrCreate(key).increment(1), 1);
			assert.equal(await client.counter.get([...key]).getCount(), 1);
		});
	});

	test("special keys round-trip: '/', '\\\\', empty parts, unicode", { timeout: TIMEOUT }, async () => {
		await withClient(async (client) => {
			const r = RUN_ID;
			const keys = [
				[r, "with/slash", "/", "//", "a/b/c"],
				[r, "back\\slash", "\\", "\\\\", "end\\", "\\0", "\\/"],
				["", r],
				[r, ""],
				[r, "", ""],
				["", "", r, "", ""],
				[r, "ключ", "日本語", "中文", "한국어", "🎉/✨", "e\u0301", "👍🏽🇺🇳"],
				[r, " spaced out ", "tab\tnew\nline", "quote\"'`", "%2F", "?x=1&y=2#frag", "a,b"],
			];
			for (const key of keys) {
				const who = await client.counter.getOrCreate(key).whoAmI();
				assert.deepEqual(
					who,
					{ name: "counter", key: expectedKey(key), actorId: who.actorId },
					`whoAmI for key ${JSON.stringify(key)}`,
				);
				const again = await client.counter.get(key.slice()).whoAmI();
				assert.equal(again.actorId, who.actorId, `get() of key ${JSON.stringify(key)}`);
			}
		});
	});

	test("no key: getOrCreate() and getOrCreate([]) are the same actor with key []", { timeout: TIMEOUT }, async () => {
		await withClient(async (client) => {
			const a = await client.counter.getOrCreate().whoAmI();
			const b = await client.counter.getOrCreate([]).whoAmI();
			assert.deepEqual(a, { name: "counter", key: expectedKey([]), actorId: a.actorId });
			assert.equal(b.actorId, a.actorId);
			const c = await client.counter.get([]).whoAmI();
			assert.equal(c.actorId, a.actorId);
		});
	});

	test("distinct keys -> distinct actors (escaping cannot collide)", { timeout: TIMEOUT }, async () => {
		await withClient(async (client) => {
			const r = RUN_ID;
			// Pairs that a naive join/split would confuse.
			const fresh = [
				[r, "a", "b"],
				[r, "a/b"],
				[`${r}/a`, "b"],
				[r, "a\\", "b"],
				[r, "a\\/b"],
				[r, "a\\\\/b"],
				[r, "a", "", "b"],
				[r, "a", "\\0", "b"],
				[r, "a", "0", "b"],
				[r, "a", "b", ""],
				[r, "a", "b", "", ""],
				[r, "ab"],
				[r, "a", "b "],
				[r, "A", "b"],
				[r],
				[r, ""],
			];
			// Not unique per run (global actors), but only their ids are compared.
			const shared = [[], [""], ["", ""], ["/"], ["\\"], ["\\0"], ["\\/"], ["0"]];
			const ids = new Map();
			for (const key of [...fresh, ...shared]) {
				const who = await client.counter.getOrCreate(key).whoAmI();
				assert.deepEqual(who.key, expectedKey(key), `key seen for ${JSON.stringify(key)}`);
				const clash = ids.get(who.actorId);
				assert.equal(
					clash,
					undefined,
					`keys ${JSON.stringify(clash)} and ${JSON.stringify(key)} resolved to the same actor ${who.actorId}`,
				);
				ids.set(who.actorId, key);
			}
			// Fresh actors have independent state.
			for (const [i, key] of fresh.entries()) {
				assert.equal(await client.counter.getOrCreate(key).increment(i + 1), i + 1);
			}
			for (const [i, key] of fresh.entries()) {
				assert.equal(
					await client.counter.get(key).getCount(),
					i + 1,
					`count of ${JSON.stringify(key)}`,
				);
			}
		});
	});

	test("same key on different actor types -> different actors", { timeout: TIMEOUT }, async () => {
		await withClient(async (client) => {
			const k = uniq("cross");
			const counterId = await client.counter.getOrCreate([k]).resolve();
			const profileId = await client.profile.getOrCreate([k]).resolve();
			assert.notEqual(counterId, profileId);
			assert.equal(await client.profile.getOrCreate([k]).getName(), "unnamed");
			assert.equal(await client.counter.getOrCreate([k]).increment(), 1);
		});
	});
});
