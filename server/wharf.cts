#!/usr/bin/env -S node --max-semi-space-size=2
/**
 * The `wharf` command's entry point: sizes libuv's thread pool, then runs the CLI (server/cli.ts).
 *
 * Every file-system call of the process goes through that pool (as do DNS lookups and asynchronous crypto). Its
 * default of 4 threads is too few for a registry: twenty concurrent pushes each end in an fsync of their data, and
 * while four of them flush, every other request's reads and writes wait for a thread (with 4 threads, 20
 * concurrent 10 MB pushes ran at 0.73× registry:2's aggregate on a 2-core VM, with 16 at 0.98×). Wharf starts the
 * pool with DEFAULT_THREADPOOL_SIZE threads unless UV_THREADPOOL_SIZE is set.
 *
 * The pool reads UV_THREADPOOL_SIZE once, when it first starts, and Node's ES module loader already uses it to read
 * the entry module; hence this small CommonJS file, which sets the variable before any module is loaded that way.
 *
 * Node's own flags cannot be set from inside the process once it runs; the first line passes them (NODE_FLAGS in
 * server/node-flags.ts says which and why, and a test holds the two together).
 */
const DEFAULT_THREADPOOL_SIZE = 16;

if (!process.env.UV_THREADPOOL_SIZE) process.env.UV_THREADPOOL_SIZE = String(DEFAULT_THREADPOOL_SIZE);

import('./cli.js').catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
