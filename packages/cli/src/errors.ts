/** CLI exit codes: 0 ok, 1 a run with failed inputs (reported), 2 a usage or configuration error. */
import { MultimeditronError } from '@multimeditron/core';

export const EXIT_OK = 0;
export const EXIT_FAILURES = 1;
export const EXIT_USAGE = 2;

/** An error that ends the command with a given exit code. */
export class CliExit extends Error {
  constructor(readonly exitCode: number, message = '') {
    super(message);
  }
}

/** Prints an error (message + suggestions) to stderr. */
export function printError(e: unknown): void {
  const err = e as Error & { suggestions?: string[] };
  process.stderr.write(`error: ${err?.message ?? String(e)}\n`);
  for (const s of err?.suggestions ?? []) process.stderr.write(`  hint: ${s}\n`);
}

/** Exit code for an error thrown by a command: config/usage errors are 2, anything else 1. */
export function exitCodeFor(e: unknown): number {
  if (e instanceof CliExit) return e.exitCode;
  if (e instanceof MultimeditronError && ['E_CONFIG', 'E_UNKNOWN', 'E_BACKEND', 'E_PLUGIN', 'E_RESOLVE', 'E_DUPLICATE'].includes(e.code)) return EXIT_USAGE;
  return EXIT_FAILURES;
}
