// Actor-to-actor calls (RivetKit's `c.client()`): the reference's
// coordinator/worker pair. `coordinator.startJob(tasks)` has one `worker`
// per task id (`worker.getOrCreate([task.id])`) process its task; each worker
// calls `coordinator.getOrCreate(coordinatorKey).reportResult(...)` back while
// `startJob` is still awaiting it (re-entrant actions), and returns
// `{id, worker: c.key, result: value * 2}`.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { TIMEOUT, expectedKey, uniq, withClient } from "../lib/helpers.mjs";

const opts = { timeout: TIMEOUT };

/** `n` tasks with ids unique to this run: `{id, value}`, values 1..n unless given. */
function makeTasks(n, label = "task", value = (i) => i + 1) {
	const prefix = uniq(label);
	return Array.from({ length: n }, (_, i) => ({ id: `${prefix}-${i}`, value: value(i) }));
}

/** The acks `startJob(tasks)` must return, in task order. */
function expectedAcks(tasks) {
	return tasks.map((t) => ({ id: t.id, worker: expectedKey([t.id]), result: t.value * 2 }));
}

/** What `results()` must hold after the job: task id -> value * 2. */
function expectedResults(tasks) {
	return Object.fromEntries(tasks.map((t) => [t.id, t.value * 2]));
}

async function processedCounts(client, tasks) {
	return Promise.all(tasks.map((t) => client.worker.get([t.id]).processedCount()));
}

describe("coordinator/worker (actor-to-actor calls)", () => {
	test("startJob(20 tasks) -> 20 acks {id, worker, result: value*2}, in task order", opts, async () => {
		await withClient(async (client) => {
			const coordinator = client.coordinator.getOrCreate([uniq("coord")]);
			const tasks = makeTasks(20);
			const acks = await coordinator.startJob(tasks);
			assert.equal(acks.length, 20);
			assert.deepEqual(acks, expectedAcks(tasks));
		});
	});

	test("results() has every task id -> value*2; each worker processed 1, then 2 after a second job", opts, async () => {
		await withClient(async (client) => {
			const coordinator = client.coordinator.getOrCreate([uniq("coord")]);
			assert.deepEqual(await coordinator.results(), {});
			const tasks = makeTasks(20);
			await coordinator.startJob(tasks);
			const results = await coordinator.results();
			assert.equal(Object.keys(results).length, 20);
			assert.deepEqual(results, expectedResults(tasks));
			assert.deepEqual(await processedCounts(client, tasks), Array(20).fill(1));

			// Same task ids, new values: the same workers process them again, and the
			// coordinator's results are overwritten, not appended.
			const again = tasks.map((t) => ({ id: t.id, value: t.value + 100 }));
			assert.deepEqual(await coordinator.startJob(again), expectedAcks(again));
			assert.deepEqual(await coordinator.results(), expectedResults(again));
			assert.deepEqual(await processedCounts(client, tasks), Array(20).fill(2));
		});
	});

	test("concurrent startJobs on two coordinators do not mix results", opts, async () => {
		await withClient(async (client) => {
			const a = client.coordinator.getOrCreate([uniq("coord-a")]);
			const b = client.coordinator.getOrCreate([uniq("coord-b")]);
			const tasksA = makeTasks(20, "task-a");
			const tasksB = makeTasks(20, "task-b", (i) => 1000 + i);
			const [acksA, acksB] = await Promise.all([a.startJob(tasksA), b.startJob(tasksB)]);
			assert.deepEqual(acksA, expectedAcks(tasksA));
			assert.deepEqual(acksB, expectedAcks(tasksB));
			assert.deepEqual(await a.results(), expectedResults(tasksA));
			assert.deepEqual(await b.results(), expectedResults(tasksB));
			assert.deepEqual(await processedCounts(client, tasksA), Array(20).fill(1));
			assert.deepEqual(await processedCounts(client, tasksB), Array(20).fill(1));
		});
	});

	test("concurrent startJobs on two coordinators sharing the workers: each gets its own results", opts, async () => {
		await withClient(async (client) => {
			// Workers are keyed by task id only, so both jobs reach the same 20 workers at the
			// same time; each worker reports to the coordinator whose key came with the task.
			const a = client.coordinator.getOrCreate([uniq("coord-a")]);
			const b = client.coordinator.getOrCreate([uniq("coord-b")]);
			const tasksA = makeTasks(20, "shared");
			const tasksB = tasksA.map((t) => ({ id: t.id, value: -t.value }));
			const [acksA, acksB] = await Promise.all([a.startJob(tasksA), b.startJob(tasksB)]);
			assert.deepEqual(acksA, expectedAcks(tasksA));
			assert.deepEqual(acksB, expectedAcks(tasksB));
			assert.deepEqual(await a.results(), expectedResults(tasksA));
			assert.deepEqual(await b.results(), expectedResults(tasksB));
			assert.deepEqual(await processedCounts(client, tasksA), Array(20).fill(2));
		});
	});

	test("a client calling worker.process directly reports to the named coordinator", opts, async () => {
		await withClient(async (client) => {
			const coordKey = uniq("coord");
			const [task] = makeTasks(1, "direct", () => 21);
			const worker = client.worker.getOrCreate([task.id]);
			// The coordinator does not exist yet: the worker's getOrCreate creates it.
			assert.deepEqual(await worker.process(task, [coordKey]), {
				id: task.id,
				worker: expectedKey([task.id]),
				result: 42,
			});
			assert.deepEqual(await client.coordinator.get([coordKey]).results(), { [task.id]: 42 });
			assert.equal(await worker.processedCount(), 1);
		});
	});

	test("startJob([]) -> [] and no results", opts, async () => {
		await withClient(async (client) => {
			const coordinator = client.coordinator.getOrCreate([uniq("coord")]);
			assert.deepEqual(await coordinator.startJob([]), []);
			assert.deepEqual(await coordinator.results(), {});
		});
	});

	test("numeric values: zero, negative, fractional, large integers double as in JS", opts, async () => {
		await withClient(async (client) => {
			const coordinator = client.coordinator.getOrCreate([uniq("coord")]);
			const values = [0, -7, 2.5, 0.1, 2 ** 40, 2 ** 52, -(2 ** 53)];
			const tasks = makeTasks(values.length, "num", (i) => values[i]);
			assert.deepEqual(await coordinator.startJob(tasks), expectedAcks(tasks));
			assert.deepEqual(await coordinator.results(), expectedResults(tasks));
		});
	});
});
