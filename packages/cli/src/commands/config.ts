/** `multimeditron config validate <file>`: validates a modality config.json against its registered schema. */
import type { Command } from 'commander';
import { readJsonFile } from '@multimeditron/core';
import { createHost, type HostOptions } from '../host.js';
import { EXIT_OK } from '../errors.js';

export function registerConfig(program: Command): void {
  const config = program.command('config').description('work with config files');
  config
    .command('validate <file>')
    .description('validate a modality config.json (its modelType picks the schema); prints it with defaults applied')
    .option('--plugins <list>', 'comma-separated plugin packages or paths (default: discovered)')
    .action(async (file: string, opts: HostOptions) => {
      const { mm } = await createHost(opts, { backend: false });
      const json = (await readJsonFile(file)) as Record<string, unknown>;
      const cfg = mm.modalities.createConfig(json);
      process.stdout.write(`${file}: valid ${cfg.constructor.name}\n${JSON.stringify(cfg.toJSON(), null, 2)}\n`);
      process.exitCode = EXIT_OK;
    });
}
