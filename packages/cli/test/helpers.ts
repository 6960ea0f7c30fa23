/** Runs the built CLI (packages/cli/bin/multimeditron.js) in a child process. */
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import path from 'node:path';
import { REPO_ROOT } from '../../../test/helpers/fixtures.js';

export const CLI_BIN = path.join(REPO_ROOT, 'packages', 'cli', 'bin', 'multimeditron.js');

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], options: SpawnSyncOptions = {}): CliResult {
  const env = { ...process.env, ...(options.env ?? {}) };
  delete env['NODE_OPTIONS'];
  const r = spawnSync(process.execPath, [CLI_BIN, ...args], { encoding: 'utf8', timeout: 120_000, ...options, env });
  return { status: r.status, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? '') };
}
