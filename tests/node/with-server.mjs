#!/usr/bin/env node
// Start a server, wait until it is ready, run a command against it, stop it.
//
//   node with-server.mjs [--port-env] <server> [server args...] -- <command> [args...]
//
// * The server gets `--listen 127.0.0.1:0` appended unless its args already
//   contain --listen. With --port-env (for the RivetKit reference server,
//   which takes env vars instead of flags) nothing is appended and the server
//   gets PORT=0 HOST=127.0.0.1 in its environment instead.
// * Readiness: the first server output line matching
//   /listening on (http:\/\/\S+)/ (stdout; stderr is accepted too). That URL
//   (the server's root) becomes PINION_ENDPOINT for the command. If the
//   server args contain `--base-path X` (or --base-path=X), the command also
//   gets PINION_BASE_ENDPOINT=<url>X, and PINION_ENDPOINT is set to the same
//   (a server with a base path serves nothing outside it).
// * Not ready within 30 s (WITH_SERVER_READY_TIMEOUT_MS), or exited early:
//   fail and print the server's output.
// * The command inherits stdio; its exit code is forwarded. If it fails (or
//   the server died meanwhile), the server's stderr is printed.
// * The server is always stopped: SIGTERM, then SIGKILL after 5 s; also on
//   Ctrl-C / SIGTERM of this launcher. The server runs in its own process
//   group, and the whole group is signalled (covers wrapper scripts).
// * WITH_SERVER_VERBOSE=1 streams the server's output live (to stderr).
import { spawn } from "node:child_process";
import { constants } from "node:os";

const READY_RE = /listening on (http:\/\/\S+)/;
const READY_TIMEOUT_MS = Number(process.env.WITH_SERVER_READY_TIMEOUT_MS ?? 30_000);
const KILL_GRACE_MS = 5_000;
const MAX_LOG = 256 * 1024; // keep the last 256 KiB of each server stream
const VERBOSE = process.env.WITH_SERVER_VERBOSE === "1";

function usage(msg) {
	if (msg) console.error(`with-server: ${msg}`);
	console.error(
		"usage: node with-server.mjs [--port-env] <server> [server args...] -- <command> [args...]",
	);
	process.exit(2);
}

// ---- arguments -------------------------------------------------------------
let argv = process.argv.slice(2);
let portEnv = false;
if (argv[0] === "--port-env") {
	portEnv = true;
	argv = argv.slice(1);
}
const sep = argv.indexOf("--");
if (sep < 1 || sep === argv.length - 1) usage("need a server and a command separated by --");
const [serverCmd, ...serverArgs] = argv.slice(0, sep);
const [command, ...commandArgs] = argv.slice(sep + 1);

let basePath = null;
for (let i = 0; i < serverArgs.length; i++) {
	const a = serverArgs[i];
	if (a === "--base-path" && i + 1 < serverArgs.length) basePath = serverArgs[i + 1];
	else if (a.startsWith("--base-path=")) basePath = a.slice("--base-path=".length);
}
const hasListen = serverArgs.some((a) => a === "--listen" || a.startsWith("--listen="));
const finalServerArgs =
	portEnv || hasListen ? serverArgs : [...serverArgs, "--listen", "127.0.0.1:0"];
const serverEnv = portEnv
	? { ...process.env, PORT: "0", HOST: "127.0.0.1" }
	: process.env;

// ---- server ---------------------------------------------------------------
class Tail {
	constructor() {
		this.chunks = [];
		this.size = 0;
		this.dropped = false;
	}
	push(buf) {
		this.chunks.push(buf);
		this.size += buf.length;
		while (this.size > MAX_LOG && this.chunks.length > 1) {
			this.size -= this.chunks.shift().length;
			this.dropped = true;
		}
	}
	text() {
		return (this.dropped ? "[... earlier output dropped ...]\n" : "") +
			Buffer.concat(this.chunks).toString("utf8");
	}
}
const outTail = new Tail();
const errTail = new Tail();

function dumpServerOutput(why) {
	console.error(`\nwith-server: ${why}`);
	console.error(`with-server: server command: ${[serverCmd, ...finalServerArgs].join(" ")}`);
	console.error("----- server stdout -----");
	console.error(outTail.text().trimEnd() || "(empty)");
	console.error("----- server stderr -----");
	console.error(errTail.text().trimEnd() || "(empty)");
	console.error("-------------------------");
}

let server;
try {
	server = spawn(serverCmd, finalServerArgs, {
		env: serverEnv,
		stdio: ["ignore", "pipe", "pipe"],
		detached: true, // own process group: Ctrl-C is handled here, and we can signal the group
	});
} catch (err) {
	console.error(`with-server: cannot start ${serverCmd}: ${err.message}`);
	process.exit(1);
}
let serverExited = false;
let serverExit = null;
let stoppingServer = false;
const serverDone = new Promise((resolve) => {
	server.on("exit", (code, signal) => {
		serverExited = true;
		serverExit = { code, signal };
		resolve();
	});
	server.on("error", (err) => {
		errTail.push(Buffer.from(`with-server: spawn error: ${err.message}\n`));
		serverExited = true;
		serverExit = { code: null, signal: null, error: err };
		resolve();
	});
});

function signalServer(sig) {
	if (serverExited || !server.pid) return;
	try {
		process.kill(-server.pid, sig); // the process group we created
	} catch {
		try {
			server.kill(sig);
		} catch {}
	}
}

async function stopServer() {
	if (serverExited) return;
	stoppingServer = true;
	signalServer("SIGTERM");
	const timer = setTimeout(() => signalServer("SIGKILL"), KILL_GRACE_MS);
	await serverDone;
	clearTimeout(timer);
	// Leftovers of the group (e.g. children of a wrapper script).
	try {
		process.kill(-server.pid, "SIGKILL");
	} catch {}
}

// Last resort if this process dies unexpectedly.
process.on("exit", () => {
	if (server?.pid && !serverExited) {
		try {
			process.kill(-server.pid, "SIGKILL");
		} catch {}
	}
});

const stripAnsi = (s) => s.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "");

const ready = new Promise((resolve, reject) => {
	let settled = false;
	const partial = { stdout: "", stderr: "" };
	const onData = (name, tail) => (buf) => {
		tail.push(buf);
		if (VERBOSE) process.stderr.write(buf);
		if (settled) return;
		partial[name] += buf.toString("utf8");
		const lines = partial[name].split("\n");
		partial[name] = lines.pop(); // keep an unfinished line
		for (const line of lines) {
			const m = READY_RE.exec(stripAnsi(line));
			if (m) {
				let url = m[1].replace(/[.,;)\]'"]+$/, "").replace(/\/+$/, "");
				try {
					new URL(url);
				} catch {
					continue;
				}
				settled = true;
				clearTimeout(timer);
				resolve(url);
				return;
			}
		}
	};
	// Keep draining both pipes for the server's whole life (a full pipe
	// would block it).
	server.stdout.on("data", onData("stdout", outTail));
	server.stderr.on("data", onData("stderr", errTail));
	const timer = setTimeout(() => {
		if (settled) return;
		settled = true;
		reject(new Error(`server not ready after ${READY_TIMEOUT_MS} ms (no line matching ${READY_RE})`));
	}, READY_TIMEOUT_MS);
	serverDone.then(() => {
		if (settled) return;
		settled = true;
		clearTimeout(timer);
		const e = serverExit?.error;
		reject(
			new Error(
				e
					? `server failed to start: ${e.message}`
					: `server exited before it was ready (code ${serverExit.code}, signal ${serverExit.signal})`,
			),
		);
	});
});

// ---- signals ----------------------------------------------------------------
let child = null;
let interrupted = null;
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
	process.on(sig, () => {
		if (interrupted) return;
		interrupted = sig;
		console.error(`\nwith-server: got ${sig}, stopping`);
		if (child && child.exitCode === null && child.signalCode === null) {
			try {
				child.kill(sig);
			} catch {}
			setTimeout(() => {
				try {
					child.kill("SIGKILL");
				} catch {}
			}, KILL_GRACE_MS).unref();
		} else {
			stopServer().then(() => process.exit(128 + (constants.signals[sig] ?? 1)));
		}
	});
}

// ---- main -------------------------------------------------------------------
let url;
try {
	url = await ready;
} catch (err) {
	if (!interrupted) dumpServerOutput(err.message);
	await stopServer();
	process.exit(interrupted ? 128 + (constants.signals[interrupted] ?? 1) : 1);
}
if (interrupted) {
	await stopServer();
	process.exit(128 + (constants.signals[interrupted] ?? 1));
}

const env = { ...process.env, PINION_ENDPOINT: url };
if (basePath !== null) {
	const bp = `/${basePath.replace(/^\/+|\/+$/g, "")}`;
	env.PINION_BASE_ENDPOINT = bp === "/" ? url : `${url}${bp}`;
	// A server with a base path serves nothing outside it: the whole suite runs under it.
	env.PINION_ENDPOINT = env.PINION_BASE_ENDPOINT;
}
console.error(
	`with-server: server ready at ${url}` +
		(env.PINION_BASE_ENDPOINT && env.PINION_BASE_ENDPOINT !== url
			? ` (base path endpoint ${env.PINION_BASE_ENDPOINT})`
			: ""),
);

const result = await new Promise((resolve) => {
	try {
		child = spawn(command, commandArgs, { stdio: "inherit", env });
	} catch (err) {
		resolve({ code: 127, error: err });
		return;
	}
	child.on("error", (err) => resolve({ code: 127, error: err }));
	child.on("exit", (code, signal) => resolve({ code, signal }));
});

const serverDiedEarly = serverExited && !stoppingServer;
let exitCode;
if (result.error) {
	console.error(`with-server: cannot run ${command}: ${result.error.message}`);
	exitCode = 127;
} else if (result.signal) {
	exitCode = 128 + (constants.signals[result.signal] ?? 1);
} else {
	exitCode = result.code ?? 1;
}
if (serverDiedEarly) {
	dumpServerOutput(
		`server exited while the command was running (code ${serverExit.code}, signal ${serverExit.signal})`,
	);
	if (exitCode === 0) exitCode = 1;
} else if (exitCode !== 0 && !interrupted && !VERBOSE) {
	dumpServerOutput(`command failed (exit ${exitCode}); server output follows`);
}
await stopServer();
if (interrupted) exitCode = 128 + (constants.signals[interrupted] ?? 1);
process.exit(exitCode);
