/**
 * Which registry the end-to-end tests drive, plus small process helpers they share.
 *
 * The committed tests run against Wharf, started by the conformance harness. Setting `WHARF_E2E_TARGET=registry2`
 * runs the very same tests against CNCF distribution's `registry:2` binary (`REGISTRY2_BIN` in the harness: `/usr/bin/docker-registry`,
 * or the path in `WHARF_E2E_REGISTRY2_BIN`) instead: that is how the tests themselves were validated, and it is a quick way to
 * tell "Wharf differs from registry:2" from "the test is wrong".
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistry2, startWharf, type RunningWharf, type StartOptions } from '../harness.js';

export type Target = 'wharf' | 'registry2';

export function targetName(): Target {
  const value = process.env.WHARF_E2E_TARGET ?? 'wharf';
  if (value !== 'wharf' && value !== 'registry2') throw new Error(`WHARF_E2E_TARGET must be wharf or registry2, not ${value}`);
  return value;
}

/** Starts the registry under test (Wharf unless WHARF_E2E_TARGET says otherwise) with delete enabled. */
export async function startRegistry(options: StartOptions = {}): Promise<RunningWharf> {
  return targetName() === 'registry2' ? startRegistry2({ rootDirectory: options.rootDirectory }) : startWharf(options);
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion, collecting its output. Never throws for a non-zero exit; see `runOk`. */
export function run(command: string, args: string[], options: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(command, args, {
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => {
      stderr += `\n[killed after ${options.timeoutMs} ms]`;
      child.kill('SIGKILL');
    }, options.timeoutMs ?? 120_000);
    child.once('error', (error) => { clearTimeout(timer); reject(error); });
    child.once('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

/** Runs a command and throws, quoting the command line and its output, unless it exits with status 0. */
export async function runOk(command: string, args: string[], options: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<RunResult> {
  const result = await run(command, args, options);
  if (result.code !== 0) {
    throw new Error(`\`${command} ${args.join(' ')}\` exited with ${result.code}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`);
  }
  return result;
}

/** A fresh temporary directory and a function that removes it. */
export async function tempDir(prefix: string): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}
