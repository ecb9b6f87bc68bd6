// Argument/result round-trips through counter.echo(...args) -> args, over the
// stateless HTTP action path with JSON encoding and "$"-tagging (spec §3.1).
import assert from "node:assert/strict";
import { before, after, describe, test } from "node:test";
import { createClient } from "rivetkit/client";
import { ENDPOINT, TIMEOUT, preflight, uniq } from "../lib/helpers.mjs";

const opts = { timeout: TIMEOUT };

describe("echo round-trips", () => {
	let client;
	let echo;
	before(async () => {
		await preflight();
		client = createClient({ endpoint: ENDPOINT, encoding: "json" });
		echo = (...args) => client.counter.getOrCreate([uniq("echo")]).echo(...args);
	});
	after(async () => {
		await client?.dispose();
	});

	// echo returns its argument array.
	async function roundTrip(...args) {
		const out = await echo(...args);
		assert.deepEqual(out, args);
		return out;
	}

	test("no arguments -> []", opts, async () => {
		assert.deepEqual(await echo(), []);
	});

	test("unicode strings: emoji, CJK, quotes, backslashes, control chars", opts, async () => {
		await roundTrip(
			"",
			"plain ascii",
			"héllo wörld ñ",
			"😀👍🏽🇺🇳👩‍👩‍👧‍👦",
			"日本語テキスト 中文 한국어",
			"Ελληνικά Русский עברית العربية",
			"e\u0301 \ufeffbom \u200bzwsp",
			"double \" single ' back `tick`",
			"back\\slash \\\\ \\n \\u0041 \\\"",
			"\u0000\u0001\u0002\u0007\b\t\n\v\f\r\u001b\u001f\u007f\u0080\u009f",
			"\u2028\u2029",
			"</script><!-- ${x} {{y}} %s %d",
			"\uffff\ud83d\ude00",
		);
	});

	test("nested objects and arrays", opts, async () => {
		const leaf = [1, "two", null];
		let deep = { leaf };
		for (let i = 0; i < 32; i++) deep = { level: i, child: deep, list: [leaf] };
		await roundTrip(
			{ a: { b: { c: [1, [2, [3, { d: null, e: [] }]]] } } },
			[[], [[]], {}, [{}], { "": "" }],
			{ "key with spaces": 1, "ключ": 2, "🔑": 3, "": 4, "a.b": 5, "a/b": 6 },
			deep,
			[1, "mixed", true, null, { x: [false] }],
		);
	});

	test("$-prefixed user arrays survive (no tag confusion)", opts, async () => {
		await roundTrip(
			["$notAType", 1],
			[["$x", ["$y", 2]]],
			["$BigInt", "5"],
			["$Uint8Array", "AQI="],
			["$ArrayBuffer", "AQI="],
			["$$a", 1],
			["$$$b", ["$c", ["$$d", null]]],
			["$a", 1, 2],
			["$a"],
			["$", 0],
			["x$", 1],
			{ "$key": ["$v", 1], nested: { arr: [["$q", { "$r": ["$s", 3] }]] } },
			"$string",
			"$BigInt",
		);
	});

	test("null and booleans", opts, async () => {
		await roundTrip(null, true, false, [null, true, false], { n: null, t: true, f: false });
	});

	test("numbers: ints, floats, negative, large safe ints", opts, async () => {
		await roundTrip(
			0,
			1,
			-1,
			42,
			-42,
			255,
			65536,
			2 ** 31 - 1,
			-(2 ** 31),
			2 ** 32,
			2 ** 40,
			Number.MAX_SAFE_INTEGER,
			Number.MIN_SAFE_INTEGER,
			3.14,
			-2.5,
			0.1,
			0.1 + 0.2,
			1 / 3,
			1e-7,
			1e21,
			1.5e300,
			5e-324,
			Number.MAX_VALUE,
			-Number.MAX_VALUE,
			Number.EPSILON,
			[1, 2.5, -3],
			{ int: 7, float: 7.25 },
		);
	});

	test("JSON semantics of the client: undefined -> null in arrays, dropped in objects", opts, async () => {
		const out = await echo(undefined, [undefined, 1], { a: undefined, b: 2 });
		assert.deepEqual(out, [null, [null, 1], { b: 2 }]);
	});

	test("Uint8Array and ArrayBuffer bytes", opts, async () => {
		const all = new Uint8Array(256).map((_, i) => i);
		const out = await echo(
			new Uint8Array([1, 2]),
			new Uint8Array([]),
			all,
			{ nested: new Uint8Array([0, 254, 255]), list: [new Uint8Array([7])] },
		);
		assert.ok(out[0] instanceof Uint8Array, "bytes come back as Uint8Array");
		assert.deepEqual(Array.from(out[0]), [1, 2]);
		assert.ok(out[1] instanceof Uint8Array);
		assert.equal(out[1].length, 0);
		assert.deepEqual(Array.from(out[2]), Array.from(all));
		assert.ok(out[3].nested instanceof Uint8Array);
		assert.deepEqual(Array.from(out[3].nested), [0, 254, 255]);
		assert.deepEqual(Array.from(out[3].list[0]), [7]);
	});

	test("ArrayBuffer comes back as ArrayBuffer", opts, async () => {
		const [out, nested] = await echo(new Uint8Array([9, 8, 7]).buffer, { b: new Uint8Array([1]).buffer });
		assert.ok(out instanceof ArrayBuffer, "ArrayBuffer comes back as ArrayBuffer");
		assert.deepEqual(Array.from(new Uint8Array(out)), [9, 8, 7]);
		assert.ok(nested.b instanceof ArrayBuffer);
		assert.deepEqual(Array.from(new Uint8Array(nested.b)), [1]);
	});

	test("BigInt (sent as [\"$BigInt\", ...] in JSON mode)", opts, async () => {
		const out = await roundTrip(
			0n,
			123n,
			-5n,
			2n ** 70n,
			-(2n ** 64n),
			{ n: 1n, list: [2n, 3] },
		);
		assert.equal(typeof out[1], "bigint");
	});

	test("large strings (under the 64 KiB incoming limit)", opts, async () => {
		const ascii = "abcdefghij".repeat(6_000); // 60,000 bytes
		const [a] = await echo(ascii);
		assert.equal(a.length, ascii.length);
		assert.equal(a, ascii);
		const cjk = "日本語テキスト中文한국어".repeat(1_500); // 18,000 chars, 54,000 bytes
		const [b] = await echo(cjk);
		assert.equal(b, cjk);
		const emoji = "😀".repeat(12_000); // 48,000 bytes
		const [c] = await echo(emoji);
		assert.equal(c, emoji);
	});

	test("object key order is preserved", opts, async () => {
		const value = {
			zebra: 1,
			apple: 2,
			mango: { y: 1, b: 2, "": 3, Z: 4, a: 5 },
			_under: 3,
			Upper: 4,
			"": 5,
			"$dollar": 6,
			"é": 7,
		};
		const [out] = await echo(value);
		assert.deepEqual(Object.keys(out), Object.keys(value));
		assert.deepEqual(Object.keys(out.mango), Object.keys(value.mango));
		assert.equal(JSON.stringify(out), JSON.stringify(value));
	});

	test("many mixed arguments", opts, async () => {
		await roundTrip(1, "two", [3], { four: 4 }, null, true, 5.5, ["$six", 6], "🎉");
	});
});
